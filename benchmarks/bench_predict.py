"""Reports per second of ``dpcore predict`` with the default model (MiniLM-L6 + LoRA), and what each speed-up
is worth.

Run: ``python benchmarks/bench_predict.py [--n 2000] [--ratio-n 300] [--threads 2] [--batch-size 64]``.
A LoRA classifier of the default configuration is saved untrained (random adapters and head: the speed of a
forward pass does not depend on the weights' values), then ``predict_file`` labels ``--n`` synthetic reports
from a CSV exactly as ``dpcore predict`` does (adapters merged, linear layers through oneDNN, length-sorted
batches, ``inference_mode``, one batch per thread, bfloat16 where the start-up probe picks it): that is the
headline figure. Ratios, on the first
``--ratio-n`` reports in the same process, each the best of two passes: the float32 fast path vs the exact
model (``--exact``), bfloat16 vs that float32 fast path, split into merged vs separate adapters and oneDNN vs torch's default linear kernel;
length-sorted vs input-order batches; ``--threads`` vs one thread; one batch per thread vs torch's threads
inside each operation; and, for information only, int8 dynamic quantisation (which ``predict`` does not
use: it changes the probabilities, and the benchmark says by how much). Wall time and process CPU time are
both reported, with the load average, because the machine may be shared. The last line of the output is one
JSON object with the figures.
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

BAR = 200.0  # the bar: reports per second on 2 cores with the default model


def save_untrained(folder: Path) -> Path:
    """A default-configuration LoRA classifier saved without training (adapters perturbed so that merging
    them changes the weights, as a trained model's would)."""
    from dpcore.config import RunConfig
    from dpcore.labels import get_label_set
    from dpcore.models import build_model, parameter_counts
    from dpcore.release.saved_model import save_classifier
    from dpcore.training.result import RunResult, library_versions

    cfg = RunConfig.from_flat({"mode": "lora"})
    labels = list(get_label_set(cfg.teacher.label_set).labels)
    torch.manual_seed(0)
    model = build_model(cfg.model, num_labels=len(labels), mode="lora")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    result = RunResult(
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        label_names=labels,
        epochs=[],
        metrics={},
        privacy=None,
        data={},
        parameters=parameter_counts(model),
        timings={},
        peak_memory_mb=0.0,
        versions=library_versions(),
        model=model,
    )
    return save_classifier(result, folder)


def gflop_per_report(lengths: list[int]) -> float:
    """Mean forward-pass GFLOP per report (2 per multiply-add): the encoder's dense layers, 2 L h (4 h + 2 i)
    per layer, and attention's scores and mixing, 4 L^2 h per layer; embeddings and the head are
    negligible."""
    from transformers import AutoConfig

    from dpcore.models import resolve_model_path

    c = AutoConfig.from_pretrained(resolve_model_path("minilm-l6"))
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    flops = [layers * (2 * n * h * (4 * h + 2 * i) + 4 * n * n * h) for n in lengths]
    return float(np.mean(flops)) / 1e9


def timed(fn: Any) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and its process CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def rate(
    model: Any, tokenizer: Any, texts: list[str], *, max_length: int, repeats: int = 2, **kw: Any
) -> tuple[np.ndarray, float, float]:
    """Probabilities, reports per second and reports per CPU second: the best of ``repeats`` passes (after a
    warm-up batch), since other processes on a shared machine only ever slow a pass down."""
    from dpcore.release.inference import probabilities

    probabilities(model, tokenizer, texts[:32], max_length=max_length)
    best = (np.zeros(0), 0.0, 0.0)
    for _ in range(repeats):
        probs, wall, cpu = timed(lambda: probabilities(model, tokenizer, texts, max_length=max_length, **kw))
        if len(texts) / wall > best[1]:
            best = (probs, len(texts) / wall, len(texts) / cpu)
    return best


def intra_op_rate(model: Any, tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int) -> float:
    """Reports per second with torch's intra-op threads and one batch at a time (best of two passes)."""
    from dpcore.release.inference import token_batches

    _, batches = token_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size)
    best = 0.0
    with torch.inference_mode():
        model(*batches[0])
        for _ in range(2):
            _, wall, _ = timed(lambda: [model(*b) for b in batches])
            best = max(best, len(texts) / wall)
    return best


def ratios(folder: Path, texts: list[str], *, batch_size: int) -> dict[str, Any]:
    """Each speed-up measured on the same reports in this process, against the exact model (adapters kept
    apart, torch's default kernels)."""
    from dpcore.release.saved_model import load_classifier

    fast = load_classifier(folder, fast=True, precision="float32")
    half = load_classifier(folder, fast=True, precision="bfloat16")
    merged = load_classifier(folder, merge=True)
    exact = load_classifier(folder)
    kw = {"max_length": fast.max_length, "batch_size": batch_size}
    tok = fast.tokenizer
    p_fast, r_fast, c_fast = rate(fast.model, tok, texts, **kw)
    p_half, r_half, _ = rate(half.model, tok, texts, precision="bfloat16", **kw)
    p_merged, r_merged, _ = rate(merged.model, tok, texts, **kw)
    p_exact, r_exact, _ = rate(exact.model, tok, texts, **kw)
    _, r_unsorted, _ = rate(fast.model, tok, texts, sort_by_length=False, **kw)
    # One thread's reports per CPU second: what one core does while it runs, whatever else the machine runs.
    _, r_one, c_one = rate(fast.model, tok, texts, workers=1, **kw)
    r_intra = intra_op_rate(fast.model, tok, texts, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        int8 = torch.ao.quantization.quantize_dynamic(merged.model, {torch.nn.Linear}, dtype=torch.qint8)
    p_int8, r_int8, _ = rate(int8, tok, texts, **kw)
    return {
        "ratio_reports": len(texts),
        "fast_vs_exact": round(r_fast / r_exact, 2),
        # What `auto` picks on a CPU with bfloat16 units (see benchmarks/bench_precision.py for a trained model).
        "bfloat16_vs_float32_fast": round(r_half / r_fast, 2),
        "bfloat16_max_abs_probability_difference": float(np.abs(p_half - p_exact).max()),
        "merged_vs_separate_adapters": round(r_merged / r_exact, 2),
        "onednn_vs_default_linear": round(r_fast / r_merged, 2),
        "fast_max_abs_probability_difference": float(np.abs(p_fast - p_exact).max()),
        "sorted_vs_unsorted_batches": round(r_fast / r_unsorted, 2),
        "threads_vs_one_thread": round(r_fast / r_one, 2),
        # The same threads inside each operation (torch's default) instead of one batch per thread.
        "batch_workers_vs_intra_op_threads": round(r_fast / r_intra, 2),
        "reports_per_cpu_s": round(c_fast, 1),
        "one_thread_reports_per_s": round(r_one, 1),
        "one_thread_reports_per_cpu_s": round(c_one, 1),
        "int8_not_used_vs_fast": round(r_int8 / r_fast, 2),
        "int8_not_used_max_abs_probability_difference": float(np.abs(p_int8 - p_exact).max()),
        "int8_not_used_label_agreement": float(((p_int8 >= 0.5) == (p_exact >= 0.5)).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic reports for the headline figure")
    parser.add_argument("--ratio-n", type=int, default=300, help="reports for each ratio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dpcore.data import generate_reports
    from dpcore.release.predict import predict_file
    from dpcore.training.precision import cpu_flags

    load_before = os.getloadavg()
    reports = generate_reports(kind="cxr", n=args.n, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_untrained(Path(tmp) / "model")
        source = Path(tmp) / "reports.csv"
        reports.select_columns(["id", "findings"]).to_csv(str(source), index=False)
        # One call, as the command makes it: its reports/s count prediction alone (the model is loaded).
        summary, total_wall, total_cpu = timed(
            lambda: predict_file(
                folder, source, Path(tmp) / "pred.csv", batch_size=args.batch_size, progress=False
            )
        )
        load_mid = os.getloadavg()
        texts = list(reports["findings"])
        extra = ratios(folder, texts[: args.ratio_n], batch_size=args.batch_size)
    from dpcore.models import load_tokenizer

    lengths = [
        len(x) for x in load_tokenizer("minilm-l6")(texts, truncation=True, max_length=128)["input_ids"]
    ]
    gflop = gflop_per_report(lengths)
    out = {
        "model": "minilm-l6 + LoRA (default configuration), as dpcore predict runs it",
        "precision": summary["precision"],
        "cpu_flags": list(cpu_flags()),
        "reports": args.n,
        "reports_per_s": summary["reports_per_second"],
        "bar_reports_per_s": BAR,
        "meets_bar": bool(summary["reports_per_second"] >= BAR),
        # Reading, loading the model, predicting and writing: the command's own time, less interpreter start.
        "end_to_end_s": round(total_wall, 2),
        "end_to_end_cpu_s": round(total_cpu, 2),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "mean_tokens_per_report": round(float(np.mean(lengths)), 1),
        **extra,
        # Arithmetic: what the bar asks of the CPU, and what one core sustained while it ran.
        "gflop_per_report": round(gflop, 2),
        "bar_needs_gflops": round(BAR * gflop, 1),
        "one_thread_gflops_per_cpu_s": round(extra["one_thread_reports_per_cpu_s"] * gflop, 1),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after_headline": [round(x, 2) for x in load_mid],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
