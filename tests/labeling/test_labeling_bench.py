"""The labeler benchmark runs and prints one JSON object last (no wall-clock assertion)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_labeler.py"


def test_benchmark_prints_json_last_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "50", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["benchmark"] == "rule_teacher_throughput"
    assert figures["n_reports"] == 50 and figures["reports_per_s_median"] > 0
