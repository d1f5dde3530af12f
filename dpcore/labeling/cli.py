"""``dpcore label``: label a file of reports with a teacher, through the cache.

Input: a CSV / JSONL / Parquet file with a text column, or a folder written by
``Dataset.save_to_disk`` (any loader's output). Output: the report ids and one column per label
(``1`` / ``0`` / ``-1`` / blank, CheXpert style) as CSV, or the ids and a list column as JSONL /
Parquet, chosen by the output file's suffix.

``dpcore label suite [--label-set chexpert|ctrate] [--heldout]`` instead scores the rule teacher on
the development suite (``dpcore/labeling/suite/``), or the frozen held-out suite
(``dpcore/labeling/suite/heldout/``), and prints the accuracy per phenomenon.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dpcore")
>>> add_label_command(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["label", "reports.csv", "-o", "labels.csv", "--text-column", "text"])
>>> args.teacher, args.label_set, args.text_column
('rules', None, 'text')
>>> parser.parse_args(["label", "suite", "--label-set", "ctrate"]).input
'suite'
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd

from dpcore.data.schema import DataError
from dpcore.data.tables import read_table
from dpcore.labeling.backends import OpenAIBackend, TransformersBackend
from dpcore.labeling.base import Teacher
from dpcore.labeling.cache import LabelCache
from dpcore.labeling.dataset import label_dataset_with_stats
from dpcore.labeling.llm import LLMTeacher
from dpcore.labeling.rules import RuleTeacher
from dpcore.labeling.suite import (
    archive_record,
    describe_failure,
    group_scores,
    load_teacher_from,
    run_suite,
)
from dpcore.labels import LABEL_SETS

DEFAULT_CACHE = Path(".dpcore") / "labels.sqlite"


def add_label_command(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``label`` subcommand (its handler is ``args.func``)."""
    p = subparsers.add_parser(
        "label",
        help="label reports with a teacher (rules or an LLM), through the label cache",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("input", help="CSV/JSONL/Parquet file, a save_to_disk folder, or 'suite'")
    p.add_argument("-o", "--output", type=Path, help="output .csv, .jsonl or .parquet (required)")
    p.add_argument("--text-column", default="findings", help="column holding the report text")
    p.add_argument("--id-column", default="id", help="column of report ids (row numbers if absent)")
    p.add_argument("--label-set", choices=sorted(LABEL_SETS), help="default chexpert (suite: both)")
    p.add_argument("--teacher", choices=["rules", "llm"], default="rules")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"label cache (default {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the label cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    llm = p.add_argument_group("LLM teacher")
    llm.add_argument("--llm-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    llm.add_argument("--llm-model", help="model name at the endpoint, or a local path / hub id")
    llm.add_argument("--llm-gguf", help="GGUF file name inside --llm-model (local transformers)")
    llm.add_argument("--smollm2", action="store_true", help="use the offline demo SmolLM2-135M")
    llm.add_argument("--api-key", help="bearer token for the endpoint")
    llm.add_argument("--max-repairs", type=int, default=1)
    cred = llm.add_mutually_exclusive_group()
    cred.add_argument("--credentialed", dest="credentialed", action="store_true", default=None)
    cred.add_argument("--public", dest="credentialed", action="store_false", help="declare the text public")
    llm.add_argument(
        "--allow-credentialed-remote",
        action="store_true",
        help="explicit opt-in to send credentialed text to a non-loopback endpoint",
    )
    suite = p.add_argument_group("dpcore label suite")
    suite.add_argument("--failures", action="store_true", help="print every sentence the teacher gets wrong")
    suite.add_argument("--json", type=Path, help="also write the scores (and provenance) as JSON")
    suite.add_argument(
        "--rules-dir", type=Path, help="score a teacher built from another copy of dpcore/labeling"
    )
    suite.add_argument("--note", default="", help="provenance note stored in the JSON")
    suite.add_argument(
        "--heldout",
        action="store_true",
        help="score the frozen held-out suite instead of the development one",
    )
    p.set_defaults(func=run_label)


def read_reports(path: Path) -> datasets.Dataset:
    """Reports from a file or a ``save_to_disk`` folder; a source without rows is an error."""
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    elif path.suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        ds = datasets.Dataset.from_pandas(read_table(path), preserve_index=False)
    else:
        raise DataError("unsupported input (use .csv, .jsonl, .json, .parquet or a folder)", file=str(path))
    if not len(ds):
        raise DataError("no reports to label", file=str(path))
    return ds


def make_teacher(args: argparse.Namespace) -> Teacher:
    """The teacher that the command-line options describe."""
    if args.teacher == "rules":
        return RuleTeacher(label_set=args.label_set or "chexpert")

    if args.smollm2:
        backend = TransformersBackend.smollm2()
    elif args.llm_url:
        if not args.llm_model:
            raise ValueError("--llm-url needs --llm-model")
        backend = OpenAIBackend(base_url=args.llm_url, model=args.llm_model, api_key=args.api_key)
    elif args.llm_model:
        backend = TransformersBackend(args.llm_model, gguf_file=args.llm_gguf)
    else:
        raise ValueError("--teacher llm needs --llm-url, --llm-model or --smollm2")
    return LLMTeacher(
        backend=backend,
        label_set=args.label_set or "chexpert",
        max_repairs=args.max_repairs,
        allow_credentialed_remote=args.allow_credentialed_remote,
    )


def write_labels(ds: datasets.Dataset, *, path: Path, id_column: str, label_names: tuple[str, ...]) -> None:
    """Ids and labels to ``path`` (CSV: one column per label; JSONL/Parquet: a list column)."""
    ids = ds[id_column] if id_column in ds.column_names else list(range(len(ds)))
    vectors = ds["teacher_labels"]
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = [
            [i, *(([None] * len(label_names)) if v is None else v), v is None]
            for i, v in zip(ids, vectors, strict=True)
        ]
        frame = pd.DataFrame(rows, columns=[id_column, *label_names, "abstained"])
        frame[list(label_names)] = frame[list(label_names)].astype("Int8")
        frame.to_csv(path, index=False)
    elif suffix in (".jsonl", ".parquet"):
        frame = pd.DataFrame({id_column: ids, "teacher_labels": vectors})
        if suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"unsupported output {path} (use .csv, .jsonl or .parquet)")


def run_label(args: argparse.Namespace) -> int:
    """Handler of ``dpcore label``; returns the exit status (0, or 3 if any report was abstained on)."""
    if args.input == "suite" and not Path(args.input).exists():
        return run_suite_command(args)
    if args.output is None:
        raise ValueError("dpcore label: -o/--output is required")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ds = read_reports(Path(args.input))
    if args.text_column not in ds.column_names:
        raise DataError(f"no such column; has {ds.column_names}", file=args.input, field=args.text_column)
    teacher = make_teacher(args)
    cache = None if args.no_cache else LabelCache(args.cache)
    res = label_dataset_with_stats(
        ds,
        teacher=teacher,
        text_column=args.text_column,
        cache=cache,
        credentialed=args.credentialed,
        # An LLM takes seconds per report: small batches move the bar and reach the cache sooner.
        batch_size=256 if args.teacher == "rules" else 8,
        progress=not args.no_progress,
    )
    write_labels(
        res.dataset, path=args.output, id_column=args.id_column, label_names=teacher.label_set.labels
    )
    print(
        f"{teacher.name} {teacher.version}: {len(ds)} reports -> {args.output} "
        f"({res.n_from_cache} from cache, {res.n_abstained} abstentions)",
        file=sys.stderr,
    )
    return 3 if res.n_abstained else 0


def git_state() -> dict[str, str | bool | None]:
    """The checkout's commit and whether ``dpcore/labeling`` differs from it (None outside git)."""
    here = Path(__file__).resolve().parent

    def git(*argv: str) -> str | None:
        try:
            out = subprocess.run(["git", *argv], cwd=here, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--", ".")
    return {"commit": commit, "labeling_clean": None if changes is None else changes == ""}


def run_suite_command(args: argparse.Namespace) -> int:
    """Handler of ``dpcore label suite``: accuracy per phenomenon; exit status 0."""
    split = "heldout" if args.heldout else "development"
    record: dict = {
        "provenance": {
            "command": " ".join(
                ["dpcore label suite"]
                + ([f"--label-set {args.label_set}"] if args.label_set else [])
                + (["--heldout"] if args.heldout else [])
                + ([f"--rules-dir {args.rules_dir}"] if args.rules_dir else [])
                + ([f"--json {args.json}"] if args.json else [])
                + (["--note ..."] if args.note else [])
            ),
            "rules_dir": str(args.rules_dir) if args.rules_dir else "dpcore/labeling (this checkout)",
            "note": args.note,
            "date": datetime.date.today().isoformat(),
            "python": platform.python_version(),
            "split": split,
            **git_state(),
        },
        "label_sets": {},
    }
    for name in [args.label_set] if args.label_set else sorted(LABEL_SETS):
        if args.rules_dir:
            teacher = load_teacher_from(args.rules_dir, label_set=name)
        else:
            teacher = RuleTeacher(label_set=name)
        results = run_suite(teacher, split=split)
        scores = group_scores(results)
        print(f"{teacher.name} {teacher.version}: {split} suite, {scores['all']['n']} sentences")
        width = max(map(len, scores))
        for group, row in scores.items():
            print(f"  {group:<{width}}  {row['correct']:>4}/{row['n']:<4} {row['accuracy']:.3f}")
        if args.failures:
            for r in results:
                if not r.correct:
                    print("  " + describe_failure(r, teacher.label_set.labels))
        record["label_sets"][name] = archive_record(teacher, results, split=split)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0
