"""Train the `data_size` study's `scale`-profile runs that the quick build does not (the larger sizes) and
write their results to book/archive/data_size/ (one RunResult JSON each), with provenance beside them.

Runs already archived are kept (their provenance entries too); archived runs whose configuration the study no
longer has are removed. So after a schedule changes, only the changed runs train again, and each provenance
entry names the commit and date of its own run.

Run from the repository root: ``python benchmarks/archive_data_size.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from dpcore.pipeline import ResultStore, archived_runs, run
from dpcore.study import Study
from dpcore.training.precision import cpu_flags

OUT = Path("book/archive/data_size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default="results", help="the results store the runs go through")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = Study.load("data_size")
    quick = {c.config_hash() for c in study.configs("quick")}
    todo = [c for c in study.configs("scale") if c.config_hash() not in quick]
    OUT.mkdir(parents=True, exist_ok=True)
    # Archived runs are matched by their configuration as this code reads it (archived_runs), so a run saved
    # before a new option existed still counts; its file keeps the name (the hash) it was saved under.
    kept = archived_runs(OUT, todo)
    saved_as = {r.config_hash for r in kept.values()}
    old = json.loads((OUT / "provenance.json").read_text()) if (OUT / "provenance.json").exists() else {}
    runs = [r for r in old.get("runs", []) if r["config_hash"] in saved_as]
    for r in runs:  # entries of a file written before entries carried their own commit and date
        r.setdefault("commit", old.get("commit"))
        r.setdefault("date", old.get("date"))
    for stale in OUT.glob("*.json"):
        if stale.name != "provenance.json" and stale.stem not in saved_as:
            stale.unlink()
    store = ResultStore(args.results)
    # The code the runs train with: read before any of them starts (a later commit is not theirs).
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "dpcore", "studies"], capture_output=True, text=True
        ).stdout.strip()
    )
    for cfg in todo:
        if cfg.config_hash() in kept:
            continue
        t0 = time.perf_counter()
        result = run(cfg, store=store, progress=False)
        result.save(OUT / f"{cfg.config_hash()}.json")
        runs.append(
            {
                "config_hash": cfg.config_hash(),
                "n_reports": cfg.data.n_reports,
                "mode": cfg.train.mode,
                "epsilon": cfg.privacy.epsilon,
                "epochs": cfg.train.resolved().epochs,
                "seconds": round(time.perf_counter() - t0, 1),
                "weighted_f1": round(result.weighted_f1, 4),
                "commit": commit,
                "uncommitted_changes_in_dpcore_or_studies": dirty,
                "date": time.strftime("%Y-%m-%d"),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    provenance = {
        "command": "python benchmarks/archive_data_size.py",
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": list(cpu_flags()),
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "runs": runs,
    }
    (OUT / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")


if __name__ == "__main__":
    main()
