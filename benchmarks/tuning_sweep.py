"""Run a grid of configurations and print one JSON line of figures per run: the tool behind the tuning note.

Run: ``python benchmarks/tuning_sweep.py GRID.json [--out runs.jsonl] [--budget SECONDS] [--base JSON]``.
GRID.json is a list of flat parameter overrides (``dpcore config`` names them); ``--base`` is applied under
every entry. Splits are built once per data configuration. Each line holds the test weighted and macro F1
against the ground truth, macro AUROC, the lowest F1 among labels with at least 50 training positives (and
which of them end at 0), epsilon from both accountants, the noise multiplier, steps, validation loss per
epoch and training seconds. ``book/archive/tuning_sweep.jsonl`` was written by this script (see
``book/archive/README.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

from dpcore.config import RunConfig  # noqa: E402
from dpcore.pipeline import prepare_splits  # noqa: E402
from dpcore.training import targets_from_labels, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=1e9)
    ap.add_argument("--base", default="{}")
    args = ap.parse_args()
    grid = json.loads(Path(args.grid).read_text())
    base = json.loads(args.base)
    cache: dict[str, object] = {}
    t0 = time.time()
    out = Path(args.out) if args.out else None
    for i, over in enumerate(grid):
        if time.time() - t0 > args.budget:
            print(json.dumps({"skipped": over}), flush=True)
            continue
        cfg = RunConfig.from_flat({**base, **over})
        key = json.dumps([cfg.data.__dict__, cfg.teacher.__dict__], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = prepare_splits(cfg)
        splits = cache[key]
        try:
            r = train(cfg, splits, progress=False)
        except Exception as e:  # keep sweeping
            print(json.dumps({"i": i, "over": over, "error": repr(e)[:300]}), flush=True)
            continue
        tr = targets_from_labels(splits["train"]["teacher_labels"], policy="u-ones")
        pos = dict(zip(r.label_names, tr.sum(0).astype(int).tolist(), strict=True))
        pl = r.metrics["test_vs_reference"]["f1"]["per_label"]
        zero = [n for n in r.label_names if pos[n] >= 50 and pl[n] == 0.0]
        rec = {
            "i": i,
            "over": over,
            "wf1": round(r.weighted_f1, 4),
            "macro": round(r.metrics["test_vs_reference"]["f1"]["macro"], 4),
            "auroc": round(r.metrics["test_vs_reference"]["auroc"]["macro"] or float("nan"), 4),
            "min_f1_50": round(min([pl[n] for n in r.label_names if pos[n] >= 50] or [np.nan]), 3),
            "zero_f1_50": zero,
            "eps_rdp": r.privacy.epsilon_rdp if r.privacy else None,
            "eps_prv": r.privacy.epsilon_prv if r.privacy else None,
            "sigma": round(r.privacy.noise_multiplier, 3) if r.privacy else None,
            "steps": r.epochs[-1].steps,
            "val_loss": [round(e.val_loss, 4) for e in r.epochs],
            "train_s": round(r.timings["train_seconds"], 1),
            "n_train": r.data["train"],
        }
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            with out.open("a") as f:
                f.write(line + "\n")
    print(f"total {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
