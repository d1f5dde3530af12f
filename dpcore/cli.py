"""The ``dpcore`` command (also ``python -m dpcore``): thin subcommands over the library's functions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dpcore import __version__
from dpcore.config import SECTIONS, RunConfig


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars or lists (``1e-3``, ``[query, value]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(path: str | None, sets: Sequence[str] = ()) -> RunConfig:
    """A run configuration from a YAML file (nested sections or flat keys) and ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"{path}: expected a mapping of parameters, got {type(loaded).__name__}")
        nested = all(isinstance(v, dict) for v in loaded.values()) and set(loaded) <= set(SECTIONS)
        data = RunConfig.from_dict(loaded).to_flat() if nested and loaded else loaded
    return RunConfig.from_flat({**data, **_parse_sets(sets)})


def _cmd_train(args: argparse.Namespace) -> int:
    """Train one configuration. Under ``torchrun`` every process trains its shard; rank 0 alone writes."""
    import os

    from dpcore.pipeline import prepare_splits
    from dpcore.results import ResultStore, code_fingerprint
    from dpcore.training import train

    cfg = load_config(args.config, args.set)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    store = ResultStore(args.results) if args.results else None

    def fresh(c: RunConfig):
        return train(
            c,
            prepare_splits(c),
            progress=not args.no_progress,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
        )

    if world > 1:
        # Every process must train (they meet in collective operations): no store look-up, rank 0 stores.
        result = fresh(cfg)
        if store is not None and rank == 0:
            result.code_fingerprint = code_fingerprint()
            store.put(result)
    else:
        result = store.get_or_run(cfg, fresh) if store is not None else fresh(cfg)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if rank != 0:
        return 0
    summary = {
        "config_hash": result.config_hash,
        "mode": result.mode,
        "weighted_f1": result.weighted_f1,
        "epsilon_rdp": result.privacy.epsilon_rdp if result.privacy else None,
        "epsilon_prv": result.privacy.epsilon_prv if result.privacy else None,
        "delta": result.privacy.delta if result.privacy else None,
        "train_seconds": result.timings["train_seconds"],
        "stop_reason": result.extra.get("stop_reason", "completed"),
        "world_size": result.extra.get("world_size", 1),
    }
    if args.output:
        result.save(args.output)
        summary["output"] = str(args.output)
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    # Shown resolved: the schedule fields left to the mode's defaults appear with the values a run uses.
    resolved = dataclasses.replace(cfg, train=cfg.train.resolved())
    print(yaml.safe_dump(resolved.to_dict(), sort_keys=False), end="")
    return 0


def _cmd_epsilon(args: argparse.Namespace) -> int:
    from dpcore.privacy import epsilons

    history = [(args.noise_multiplier, args.sample_rate, args.steps)]
    print(json.dumps(epsilons(history=history, delta=args.delta)))
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:
    from dpcore.privacy import noise_for_epsilon

    sigma = noise_for_epsilon(
        target_epsilon=args.epsilon,
        delta=args.delta,
        sample_rate=args.sample_rate,
        steps=args.steps,
        accountant=args.accountant,
    )
    print(json.dumps({"noise_multiplier": sigma, "accountant": args.accountant}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpcore", description="DP-LoRA radiology report classification: data, labels, training, privacy."
    )
    parser.add_argument("--version", action="version", version=f"dpcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML file of parameters (nested sections or flat keys)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")

    train = sub.add_parser("train", help="train and evaluate one configuration")
    config_args(train)
    train.add_argument("--results", default="results", help="results store folder ('' to disable)")
    train.add_argument("--output", type=Path, help="also write the run's result JSON here")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--checkpoint-dir", help="save checkpoints here every epoch; a killed run resumes from them"
    )
    train.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    train.set_defaults(func=_cmd_train)

    show = sub.add_parser("config", help="print the full configuration that parameters resolve to")
    config_args(show)
    show.set_defaults(func=_cmd_config)

    privacy = sub.add_parser("privacy", help="privacy accounting (RDP and PRV)")
    psub = privacy.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")
    eps = psub.add_parser("epsilon", help="epsilon spent by Poisson-sampled DP-SGD steps")
    noise = psub.add_parser("noise", help="noise multiplier for a target epsilon")
    for p in (eps, noise):
        p.add_argument("--sample-rate", type=float, required=True)
        p.add_argument("--steps", type=int, required=True)
        p.add_argument("--delta", type=float, required=True)
    eps.add_argument("--noise-multiplier", type=float, required=True)
    eps.set_defaults(func=_cmd_epsilon)
    noise.add_argument("--epsilon", type=float, required=True)
    noise.add_argument("--accountant", choices=["rdp", "prv"], default="rdp")
    noise.set_defaults(func=_cmd_noise)

    from dpcore.data.cli import add_corpus_commands
    from dpcore.labeling.cli import add_label_command
    from dpcore.study_cli import add_study_command

    add_corpus_commands(sub)
    add_label_command(sub)
    add_study_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
