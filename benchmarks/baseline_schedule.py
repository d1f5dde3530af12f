"""Choose the quick profile's non-private schedules (LoRA and full fine-tuning epochs) on the validation split.

Trains the grid's quick-profile LoRA (seed 0) and full fine-tuning rows of each corpus at several numbers of
epochs, everything else as the grid has it, and appends one JSON line per run to
book/archive/baseline_schedule.jsonl: the flat parameters, the validation weighted F1 against the teacher
(``val_wf1``, what the choice is made on), the test weighted F1 with its bootstrap interval (read only after
the choice), the per-epoch validation loss, seconds, the CPU's flags and the commit. The tuning chapter reads
the file; ``studies/grid.yml`` says which schedule was taken.

Run from the repository root:
``python benchmarks/baseline_schedule.py [--threads 2] [--only cxr|ct] [--mode lora|full] [--epochs 10 15]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from dpcore.pipeline.runs import train
from dpcore.pipeline.splits import prepare_splits
from dpcore.study import Study
from dpcore.training.precision import cpu_flags

OUT = Path("book/archive/baseline_schedule.jsonl")
EPOCHS = {"lora": (3, 6, 10, 15), "full": (3, 6, 10, 15)}


def candidates(corpus: str) -> list:
    """The grid's quick LoRA (seed 0) and full rows of ``corpus``, one per number of epochs tried."""
    out = []
    for cfg in Study.load("grid").configs("quick"):
        if cfg.data.corpus != corpus or cfg.train.mode not in EPOCHS or cfg.train.seed != 0:
            continue
        if cfg.model.trainable_layers == 0:  # the head-alone reference row keeps its own schedule
            continue
        out += [cfg.replace(epochs=e, membership_sample=0) for e in EPOCHS[cfg.train.mode]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("cxr", "ct"), help="one corpus (two processes can share the work)")
    parser.add_argument("--mode", choices=tuple(EPOCHS), help="one mode")
    parser.add_argument("--epochs", type=int, nargs="*", help="only these numbers of epochs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    corpora = [f"synthetic-{args.only}"] if args.only else ["synthetic-cxr", "synthetic-ct"]
    for corpus in corpora:
        configs = [
            c
            for c in candidates(corpus)
            if (args.mode is None or c.train.mode == args.mode)
            and (not args.epochs or c.train.epochs in args.epochs)
        ]
        splits = prepare_splits(configs[0])
        for cfg in configs:
            t0 = time.perf_counter()
            result = train(cfg, splits, progress=False)
            test = result.metrics["test_vs_reference"]
            line = {
                **{k: v for k, v in cfg.to_flat().items() if v is not None},
                "val_wf1": round(result.validation_weighted_f1, 4),
                "test_wf1": round(result.weighted_f1, 4),
                "ci": [round(x, 4) for x in test["f1_ci"]["weighted"]],
                "n_train": result.data["train"],
                "val_loss": [round(e.val_loss, 4) for e in result.epochs],
                "train_s": round(result.timings.get("train_seconds", 0.0), 1),
                "seconds": round(time.perf_counter() - t0, 1),
                "precision": result.extra.get("precision"),
                "torch_threads": args.threads,
                "cpu_flags": list(cpu_flags()),
                "commit": commit,
                "date": time.strftime("%Y-%m-%d"),
            }
            print(json.dumps(line), flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
