"""``dpcore study run|show``: run a study (a named grid of configurations) through the results store.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dpcore")
>>> add_study_command(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["study", "run", "grid", "--profile", "paper", "--set", "epochs=1", "--dry-run"])
>>> args.study, args.profile, args.set, args.dry_run, args.results
('grid', 'paper', ['epochs=1'], True, 'results')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from dpcore.config import parse_overrides
from dpcore.study.runner import (
    DEFAULT_PROFILE,
    Study,
    plan,
    run_study,
    study_configs_table,
)
from dpcore.study.tables import save_table

MAIN_COLUMNS = [
    "config_hash",
    "run",
    "weighted_f1",
    "weighted_f1_lo",
    "weighted_f1_hi",
    "macro_f1",
    "epsilon_rdp",
    "train_seconds",
]


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 60):
        print(frame.to_string(index=False) if len(frame) else "(no runs)")


def _load(args: argparse.Namespace) -> tuple[Study, dict[str, Any]]:
    study, overrides = Study.load(args.study), parse_overrides(args.set)
    study.configs(args.profile, overrides)  # every configuration valid before anything runs
    return study, overrides


def _cmd_show(args: argparse.Namespace) -> int:
    study, overrides = _load(args)
    configs = study.configs(args.profile, overrides)
    print(f"study {study.name} ({study.where}), profile {args.profile}: {len(configs)} runs")
    if study.description:
        print(study.description)
    _print(study_configs_table(configs))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    study, overrides = _load(args)
    if args.dry_run:
        planned = plan(study, profile=args.profile, overrides=overrides, store=args.results)
        counts = planned["status"].value_counts()
        print(
            f"study {study.name}, profile {args.profile}: {len(planned)} runs, "
            f"{counts.get('to train', 0)} to train, {counts.get('stored', 0)} stored in {args.results}"
        )
        _print(planned)
        return 0
    table = run_study(
        study, profile=args.profile, overrides=overrides, store=args.results, progress=not args.no_progress
    )
    _print(table[[c for c in MAIN_COLUMNS if c in table.columns]])
    if args.csv:
        print(f"wrote {save_table(table, args.csv)}")
    return 0


def add_study_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``study run`` and ``study show`` (their handlers are ``args.func``)."""
    study = subparsers.add_parser(
        "study", help="run a study: a named grid of configurations (studies/<name>.yml) through the store"
    )
    sub = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="train what the results store lacks, then print the table")
    show = sub.add_parser("show", help="print the expanded configurations' varying fields")
    for p in (run, show):
        p.add_argument("study", help="a study file, or a name found as studies/<name>.yml")
        p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile (default {DEFAULT_PROFILE})")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter in every run (repeatable); a list: a,b or [a, b]",
        )
    run.add_argument("--results", default="results", help="results store folder (default results)")
    run.add_argument("--dry-run", action="store_true", help="print what would train and what is stored")
    run.add_argument("--csv", type=Path, help="write the table (per-label F1 included) as CSV")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)
    show.set_defaults(func=_cmd_show)
