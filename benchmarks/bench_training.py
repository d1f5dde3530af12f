"""Time per epoch and peak memory of every training mode, their ratios, and per-step figures beside them.

Run: ``python benchmarks/bench_training.py [--n-reports 400] [--batch-size 64] [--model minilm-l6]``.
Every mode trains two epochs on the same synthetic reports at their real lengths (max_length 128) with the
same logical batch, each in a fresh process (so peak resident memory is its own); the second epoch's training
time is the figure (the first, which also pays one-time costs, is reported beside it). The per-step figure is
one optimisation step on a fixed batch of 32 reports x 128 tokens (the micro-benchmark of design.md).
Modes whose default batch size differs from ``--batch-size`` are run again at their default (on more reports
where a DP default batch needs them).
The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

# name -> flat parameters (DP modes get a fixed noise multiplier: the noise scale does not change the cost)
MODES: dict[str, dict[str, Any]] = {
    "lora": {"mode": "lora"},
    "dp-lora": {"mode": "dp-lora", "noise_multiplier": 1.0, "grad_sample_mode": "hooks"},
    "dp-lora-ghost": {"mode": "dp-lora", "noise_multiplier": 1.0, "grad_sample_mode": "ghost"},
    "full": {"mode": "full"},
    "dp-full": {"mode": "dp-full", "noise_multiplier": 1.0, "grad_sample_mode": "ghost"},
}


def _config(args: argparse.Namespace, params: dict[str, Any], batch_size: int | None):
    from dpcore.config import RunConfig

    flat = {
        "model": args.model,
        "n_reports": args.n_reports,
        "split_fractions": [0.9, 0.05, 0.05],
        "max_length": 128,
        # Two epochs; the second is the one reported: the first also pays one-time costs (allocations,
        # Opacus's hooks and einsum plans) that a real run spends once.
        "epochs": 2,
        **params,
    }
    if batch_size is not None:
        flat["batch_size"] = batch_size
    return RunConfig.from_flat(flat)


def _per_step_seconds(cfg, repeats: int = 2) -> float:
    """Seconds of one optimisation step on 32 reports of 128 tokens (after one warm-up step)."""
    import torch

    from dpcore.models import build_model
    from dpcore.training import build_optimizer, make_private, train_step

    model = build_model(cfg.model, num_labels=14, mode=cfg.train.mode)
    optimizer = build_optimizer(model, cfg)
    private = None
    g = torch.Generator().manual_seed(0)
    chunk = (
        torch.randint(1000, 20000, (32, 128), generator=g),
        torch.ones(32, 128, dtype=torch.long),
        (torch.rand(32, 14, generator=g) < 0.2).float(),
    )
    if cfg.is_private:
        private = make_private(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=32,
            grad_sample_mode=cfg.privacy.resolved_grad_sample_mode(cfg.train.mode),
            example_inputs=(chunk[0][:2], chunk[1][:2]),
        )
        model, optimizer = private.module, private.optimizer
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        train_step(model, optimizer, [chunk], logical_size=32, private=private)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One mode in this process: one epoch through ``train``, then the per-step figure."""
    import torch

    from dpcore.pipeline import prepare_splits
    from dpcore.training import train

    cfg = _config(args, MODES[args.worker], args.batch_size or None)
    splits = prepare_splits(cfg)
    result = train(cfg, splits, progress=False)
    epoch = result.epochs[-1]
    out = {
        "mode": args.worker,
        "batch_size": cfg.train.resolved().batch_size,
        "physical_batch_size": cfg.train.resolved_physical_batch_size,
        "grad_sample_mode": result.privacy.grad_sample_mode if result.privacy else None,
        "train_reports": result.data["train"],
        "steps": epoch.steps - result.epochs[0].steps,  # records count steps cumulatively
        "epoch_seconds": round(epoch.train_seconds, 2),
        "first_epoch_seconds": round(result.epochs[0].train_seconds, 2),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_parameters": result.parameters["trainable"],
        "threads": torch.get_num_threads(),
    }
    if not args.no_per_step:
        out["step_seconds_32x128"] = round(_per_step_seconds(cfg), 3)
    return out


def _run_worker(args: argparse.Namespace, mode: str, batch_size: int | None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--model",
        args.model,
        "--n-reports",
        # A DP batch must not exceed the training split (90% of the reports).
        str(max(args.n_reports, math.ceil((batch_size or 0) / 0.9) + 16)),
    ]
    cmd += ["--batch-size", str(batch_size or 0)] + (["--no-per-step"] if batch_size is None else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--n-reports", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64, help="the logical batch every mode uses")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-per-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from dpcore.config import RunConfig

    modes = args.modes.split(",")
    same = {m: _run_worker(args, m, args.batch_size) for m in modes}
    for m, r in same.items():
        print(
            f"{m:14s} epoch {r['epoch_seconds']:7.2f} s  step(32x128) {r.get('step_seconds_32x128', 0):6.3f} s"
            f"  peak {r['peak_memory_mb']:7.0f} MB  ({r['steps']} steps of logical batch {r['batch_size']})"
        )
    defaults = {}
    for m in modes:
        flat = {k: v for k, v in MODES[m].items() if k not in ("grad_sample_mode",)}
        default_batch = RunConfig.from_flat(flat).train.resolved().batch_size
        defaults[m] = (
            {**same[m], "reused": True}
            if default_batch == args.batch_size
            else _run_worker(args, m, default_batch)
        )

    def ratio(a: str, b: str, key: str) -> float | None:
        if a in same and b in same and same[b].get(key):
            return round(same[a][key] / same[b][key], 3)
        return None

    ratios = {
        f"{a}/{b}": {"epoch": ratio(a, b, "epoch_seconds"), "step": ratio(a, b, "step_seconds_32x128")}
        for a, b in [("dp-lora", "lora"), ("dp-lora-ghost", "lora"), ("dp-full", "full"), ("full", "lora")]
    }
    for k, v in ratios.items():
        print(f"{k:20s} per epoch {v['epoch']}  per step {v['step']}")
    print(
        json.dumps(
            {
                "benchmark": "training_modes",
                "model": args.model,
                "n_reports": args.n_reports,
                "logical_batch_size": args.batch_size,
                "same_batch": same,
                "default_batch": defaults,
                "ratios": ratios,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
