"""Throughput of the rule teacher (reports per second, one core) on the synthetic corpus.

Run: ``python benchmarks/bench_labeler.py [--n 3000] [--label-set chexpert] [--path fast]``. The
last line of the output is one JSON object with the figures. Importable: :func:`bench_rule_teacher`.
``--path reference`` times the slow reference path instead (every phrase regex scanned over the
whole text), the definition the fast path is tested against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any


def bench_rule_teacher(
    *,
    n_reports: int = 3000,
    label_set: str = "chexpert",
    repeats: int = 3,
    seed: int = 0,
    path: str = "fast",
) -> dict[str, Any]:
    """Label ``n_reports`` synthetic Findings ``repeats`` times; report the best and median rate.

    Runs in the calling thread (the rule teacher is pure Python: one core). The texts are
    generated before the clock starts; the teacher is built (rules compiled) before it too.
    ``path="reference"`` times ``RuleTeacher._label_reference`` instead of ``label_texts``.
    """
    from dpcore.data import generate_reports
    from dpcore.labeling import RuleTeacher

    kind = "cxr" if label_set == "chexpert" else "ct"
    texts = generate_reports(kind=kind, n=n_reports, seed=seed)["findings"]
    t0 = time.perf_counter()
    teacher = RuleTeacher(label_set=label_set)
    build_s = time.perf_counter() - t0
    if path not in ("fast", "reference"):
        raise ValueError(f"path must be 'fast' or 'reference', not {path!r}")
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if path == "fast":
            teacher.label_texts(texts)
        else:
            [teacher._label_reference(t) for t in texts]
        rates.append(len(texts) / (time.perf_counter() - t0))
    return {
        "benchmark": "rule_teacher_throughput",
        "label_set": label_set,
        "path": path,
        "n_reports": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "repeats": repeats,
        "reports_per_s_best": round(max(rates), 1),
        "reports_per_s_median": round(statistics.median(rates), 1),
        "build_s": round(build_s, 4),
        "rules_version": teacher.version,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--label-set", default="chexpert", choices=["chexpert", "ctrate"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--path", default="fast", choices=["fast", "reference"])
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the figure claims
    results = [
        bench_rule_teacher(n_reports=args.n, label_set=args.label_set, repeats=args.repeats, path=args.path)
    ]
    for r in results:
        print(
            f"{r['label_set']} ({r['path']} path): {r['reports_per_s_median']:.0f} reports/s "
            f"(median of {r['repeats']}, best {r['reports_per_s_best']:.0f})"
        )
    print(json.dumps(results[0]))


if __name__ == "__main__":
    main()
