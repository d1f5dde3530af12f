"""The ``dpcore`` command (also ``python -m dpcore``): thin subcommands over the library's functions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist
import yaml

from dpcore import __version__
from dpcore.attacks.cli import register as add_audit_commands
from dpcore.config import RunConfig, load_config
from dpcore.data.cli import add_corpus_commands
from dpcore.labeling.cli import add_label_command
from dpcore.pipeline import ResultStore, code_fingerprint, prepare_splits, train
from dpcore.privacy import epsilons, noise_for_epsilon
from dpcore.release.cli import register as add_predict_command
from dpcore.release.saved_model import MANIFEST, save_classifier
from dpcore.study.cli import add_study_command
from dpcore.training.coverage import run_summary


def _cmd_train(args: argparse.Namespace) -> int:
    """Train one configuration. Under ``torchrun`` every process trains its shard; rank 0 alone writes."""

    cfg = load_config(args.config, args.set)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    store = ResultStore(args.results) if args.results else None

    save = args.save_model is not None
    if save:
        _check_model_folder(args.save_model)
        _check_secure_release(cfg)

    def fresh(c: RunConfig):
        return train(
            c,
            prepare_splits(c),
            progress=not args.no_progress,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            # A stored result has no weights: a model to save is trained here, for release (secure RNG
            # unless privacy.secure says otherwise).
            keep_model=save,
            release=save,
        )

    if world > 1 or save:
        # Under torchrun every process must train (they meet in collective operations); a model to save
        # must be trained now, and its result does not replace one already stored. Rank 0 stores.
        result = fresh(cfg)
        kept = save and store is not None and store.get(cfg) is not None
        if store is not None and rank == 0 and not kept:
            result.code_fingerprint = code_fingerprint()
            store.put(result)
    else:
        result = store.get_or_run(cfg, fresh) if store is not None else fresh(cfg)

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if rank != 0:
        return 0

    summary = run_summary(result)
    if args.output:
        result.save(args.output)
        summary["output"] = str(args.output)
    if save:
        summary["saved_model"] = str(save_classifier(result, args.save_model, merge=args.merge_adapters))
    print(json.dumps(summary, indent=1))
    return 0


def _check_model_folder(folder: str) -> None:
    """Refuse a --save-model folder that would be overwritten or cannot be written, before training."""

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--save-model {folder}: is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise ValueError(f"--save-model {folder}: folder is not empty and holds no saved classifier")


def _check_secure_release(cfg: RunConfig) -> None:
    """Refuse, before training, a DP model saved from seeded (replayable) generators: see
    :func:`dpcore.release.saved_model.check_releasable`."""

    if cfg.is_private and cfg.privacy.secure is False:
        raise ValueError(
            "--save-model with privacy.secure=false: the saved folder publishes train.seed, from which "
            "anyone holding it could replay the DP noise; leave secure unset (or true) to save a model"
        )


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    # Shown resolved: the schedule fields left to the mode's defaults appear with the values a run uses.
    resolved = dataclasses.replace(cfg, train=cfg.train.resolved())
    print(yaml.safe_dump(resolved.to_dict(), sort_keys=False), end="")
    return 0


def _check_accounting(args: argparse.Namespace) -> None:
    """The accountants' inputs in range: out of range, Opacus fails deep inside with no option named."""
    checks = [
        ("--delta", args.delta, 0 < args.delta < 1, "in (0, 1)"),
        ("--sample-rate", args.sample_rate, 0 < args.sample_rate <= 1, "in (0, 1]"),
        ("--steps", args.steps, args.steps > 0, "positive"),
    ]
    if getattr(args, "noise_multiplier", None) is not None:
        checks.append(("--noise-multiplier", args.noise_multiplier, args.noise_multiplier > 0, "positive"))
    if getattr(args, "epsilon", None) is not None:
        checks.append(("--epsilon", args.epsilon, args.epsilon > 0, "positive"))
    for option, value, ok, what in checks:
        if not ok:
            raise ValueError(f"{option} must be {what}, got {value}")


def _cmd_epsilon(args: argparse.Namespace) -> int:

    _check_accounting(args)
    history = [(args.noise_multiplier, args.sample_rate, args.steps)]
    print(json.dumps(epsilons(history=history, delta=args.delta)))
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:

    _check_accounting(args)
    sigma = noise_for_epsilon(
        target_epsilon=args.epsilon,
        delta=args.delta,
        sample_rate=args.sample_rate,
        steps=args.steps,
        accountant=args.accountant,
    )
    print(json.dumps({"noise_multiplier": sigma, "accountant": args.accountant}))
    return 0


# Values are YAML scalars checked against the parameter's type; a list parameter takes one name, a comma list
# or a YAML list (lora_targets=query, lora_targets=query,value, lora_targets=[query, value]).
SET_HELP = "override a parameter (repeatable); a list: a,b or [a, b]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpcore", description="DP-LoRA radiology report classification: data, labels, training, privacy."
    )
    parser.add_argument("--version", action="version", version=f"dpcore {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (before the command)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML file of parameters (nested sections or flat keys)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)

    train = sub.add_parser("train", help="train and evaluate one configuration")
    config_args(train)
    train.add_argument("--results", default="results", help="results store folder ('' to disable)")
    train.add_argument("--output", type=Path, help="also write the run's result JSON here")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--checkpoint-dir",
        help="save checkpoints here every epoch; a killed run resumes from them. They hold the noise "
        "generators' states: keep them as secret as the training data (written readable by you only)",
    )
    train.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    train.add_argument(
        "--save-model",
        metavar="DIR",
        help="save the trained classifier (weights, tokenizer, thresholds, privacy report, model card) to "
        "DIR for `dpcore predict`. The run is then always trained, even when the results store holds it (a "
        "stored result has no weights), a DP run with the secret RNG (privacy.secure=false is refused: "
        "a released model must not be replayable); its result is stored only if the store has none for "
        "this configuration. Checkpoints hold the RNG states: keep them as secret as the data",
    )
    train.add_argument(
        "--merge-adapters",
        action="store_true",
        help="with --save-model: merge LoRA adapters into the encoder and save it whole (no base needed)",
    )
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

    add_corpus_commands(sub)
    add_label_command(sub)
    add_study_command(sub)
    add_audit_commands(sub)
    add_predict_command(sub)
    return parser


# Bad input (a wrong value, file, column or name) raises these from validation; a one-line message and exit
# status 2 serve the user better than a traceback. Anything else is a bug and keeps its traceback.
BAD_INPUT: tuple[type[BaseException], ...] = (
    ValueError,  # dpcore.data.DataError, StudyError and config errors among them
    KeyError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def error_line(err: BaseException) -> str:
    """One line that says what was wrong (file, row and field where the error names them).

    >>> error_line(KeyError("unknown label set 'x'"))
    "unknown label set 'x'"
    >>> error_line(FileNotFoundError(2, "No such file or directory", "run.yml"))
    'file run.yml: no such file or directory'
    """
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # str(KeyError) would quote the message
    elif isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"file {err.filename}: {err.strerror[0].lower()}{err.strerror[1:]}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input is one line on stderr and exit status 2 (``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BAD_INPUT as err:
        if args.debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as done:
        if not isinstance(done.code, str) or args.debug:
            raise
        print(f"error: {error_line(done)}", file=sys.stderr)  # SystemExit("message") from a command
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
