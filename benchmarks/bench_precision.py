"""bfloat16 autocast against float32 on this CPU: training steps (DP-LoRA and LoRA) and prediction, measured
in one run, with the CPU's flags and what the start-up probe chose.

Run: ``python benchmarks/bench_precision.py [--threads 2] [--n-train 800] [--n-predict 1000]``.

Training: the default encoder (MiniLM-L6) with LoRA on its top layer, the five layers below frozen and their
output computed once (as the book's quick profile trains), dropout 0, eager attention; one DP-SGD step
(Opacus, hooks) and one non-private step on the same 64 reports, each precision timed as the best of five
steps after a warm-up. Prediction: a LoRA classifier trained briefly on ``--n-train`` synthetic reports is
saved, loaded on the fast path in float32 (merged adapters, oneDNN's float32 kernels) and in bfloat16, and
labels ``--n-predict`` other reports through ``predict_proba``: reports per second for each (bfloat16's
reports within the recheck margin of a threshold re-run in float32), whether every label agrees, and, for
bfloat16 alone, the label disagreements and the largest probability difference. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpcore.config import RunConfig
from dpcore.data import generate_reports
from dpcore.models import build_model, load_tokenizer, set_attention, set_dropout
from dpcore.pipeline import prepare_splits
from dpcore.release import load_classifier, save_classifier
from dpcore.release.inference import probabilities
from dpcore.release.saved_model import BF16_RECHECK_MARGIN
from dpcore.training import make_private, pad_collate, train, train_step
from dpcore.training.precision import probe

BASE = {"model": "minilm-l6", "trainable_layers": 1, "max_length": 128, "dropout": 0.0}


def step_seconds(*, private: bool, precision: str, batch: list[Any]) -> float:
    """Best of five training steps on ``batch`` (after one warm-up step)."""
    cfg = RunConfig.from_flat(
        {**BASE, "mode": "dp-lora" if private else "lora", "epsilon": 10.0 if private else None}
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, num_labels=14, mode=cfg.train.mode)
    set_dropout(model, 0.0)
    set_attention(model, "auto", torch.device("cpu"))
    ids, mask, targets = pad_collate(0)(batch)
    with torch.no_grad():
        feats = model.frozen_features(ids, mask)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    parts = None
    if private:
        parts = make_private(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=len(batch),
            grad_sample_mode="hooks",
        )
        model, optimizer = parts.module, parts.optimizer
    chunk = [(feats, mask, targets)]
    best = float("inf")
    for k in range(6):
        t0 = time.perf_counter()
        train_step(model, optimizer, chunk, logical_size=len(batch), private=parts, precision=precision)
        if k:
            best = min(best, time.perf_counter() - t0)
    return best


def prediction(folder: Path, texts: list[str]) -> dict[str, Any]:
    """Reports per second of the fast path in each precision, through ``predict_proba`` (bfloat16's
    borderline reports re-run in float32), and how far bfloat16 alone moves the outputs."""
    out: dict[str, Any] = {}
    probs, raw = {}, {}
    for precision in ("float32", "bfloat16"):
        clf = load_classifier(folder, fast=True, precision=precision)
        clf.predict_proba(texts[:64])  # warm-up
        best = 0.0
        for _ in range(2):
            t0 = time.perf_counter()
            probs[precision] = clf.predict_proba(texts)
            best = max(best, len(texts) / (time.perf_counter() - t0))
        out[f"{precision}_reports_per_s"] = round(best, 1)
        t0 = time.perf_counter()
        raw[precision] = probabilities(
            clf.model, clf.tokenizer, texts, max_length=clf.max_length, precision=precision
        )
        out[f"{precision}_unchecked_reports_per_s"] = round(len(texts) / (time.perf_counter() - t0), 1)
        thresholds = np.asarray(clf.thresholds, dtype=np.float32)
    labels = {k: v >= thresholds for k, v in probs.items()}
    raw_labels = {k: v >= thresholds for k, v in raw.items()}
    out["bfloat16_vs_float32_prediction"] = round(
        out["bfloat16_reports_per_s"] / out["float32_reports_per_s"], 2
    )
    out["labels_identical"] = bool((labels["float32"] == labels["bfloat16"]).all())
    out["label_disagreements"] = int((labels["float32"] != labels["bfloat16"]).sum())
    out["label_cells"] = int(labels["float32"].size)
    out["recheck_margin"] = BF16_RECHECK_MARGIN
    out["rechecked_report_fraction"] = round(float(clf.borderline(raw["bfloat16"]).mean()), 4)
    # bfloat16 alone, without the float32 re-run of borderline reports:
    out["unchecked_label_disagreements"] = int((raw_labels["float32"] != raw_labels["bfloat16"]).sum())
    out["max_abs_probability_difference"] = float(np.abs(raw["float32"] - raw["bfloat16"]).max())
    out["positive_label_rate"] = round(float(labels["float32"].mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-predict", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    chosen = probe("cpu")
    reports = generate_reports(kind="cxr", n=64, seed=7)
    tok = load_tokenizer("minilm-l6")
    enc = tok(list(reports["findings"]), truncation=True, max_length=128)["input_ids"]
    g = torch.Generator().manual_seed(0)
    batch = [(torch.tensor(ids), (torch.rand(14, generator=g) < 0.2).float()) for ids in enc]
    steps = {
        f"{'dp_lora' if private else 'lora'}_{precision}_step_s": step_seconds(
            private=private, precision=precision, batch=batch
        )
        for private in (True, False)
        for precision in ("float32", "bfloat16")
    }
    cfg = RunConfig.from_flat(
        {**BASE, "mode": "lora", "n_reports": args.n_train, "epochs": 2, "precision": "float32"}
    )
    result = train(cfg, prepare_splits(cfg), progress=False, keep_model=True)
    texts = list(generate_reports(kind="cxr", n=args.n_predict, seed=11)["findings"])
    with tempfile.TemporaryDirectory() as tmp:
        predict = prediction(save_classifier(result, Path(tmp) / "m"), texts)
    out = {
        "cpu_flags": list(chosen.cpu_flags),
        "cpu": platform.processor() or platform.machine(),
        "probe": chosen.to_dict(),
        "torch_threads": torch.get_num_threads(),
        **{k: round(v, 4) for k, v in steps.items()},
        "dp_lora_bfloat16_vs_float32_training": round(
            steps["dp_lora_float32_step_s"] / steps["dp_lora_bfloat16_step_s"], 2
        ),
        "lora_bfloat16_vs_float32_training": round(
            steps["lora_float32_step_s"] / steps["lora_bfloat16_step_s"], 2
        ),
        "trained_model_test_weighted_f1": round(result.weighted_f1, 4),
        "predict_reports": len(texts),
        **predict,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
