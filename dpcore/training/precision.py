"""Mixed precision: bfloat16 autocast where this machine runs it faster than float32, chosen by a probe.

CPUs differ: with AMX (Sapphire Rapids and later) bfloat16 matrix products run several times faster than
float32; with AVX512-BF16 alone the gain is smaller; without either, bfloat16 is emulated and slower. So the
choice is measured, not assumed: :func:`probe` times one of the encoder's matrix products both ways on this
machine and checks that they agree. Autocast changes only the forward pass's matrix products; the weights
stay float32 (the master copy the optimiser updates), and under DP the per-sample gradients are cast back to
float32 before Opacus computes their norms, clips them and adds the noise (:func:`float32_grad_samples`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dpcore.config import PRECISIONS

# bfloat16 is chosen when it is at least this much faster than float32 on the probe...
MIN_SPEEDUP = 1.3
# ...and its product agrees with float32's to this relative (Frobenius) error: bfloat16 keeps 8 bits of
# mantissa (a relative rounding of 2^-9 per input); products accumulate in float32.
MAX_RELATIVE_ERROR = 1e-2
# CPU features that decide how fast bfloat16 runs (printed with every benchmark).
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


@dataclass(frozen=True)
class Probe:
    """What the probe measured on this machine and what it chose."""

    device_type: str
    float32_seconds: float
    bfloat16_seconds: float
    relative_error: float
    chosen: str
    cpu_flags: tuple[str, ...]

    @property
    def speedup(self) -> float:
        return self.float32_seconds / self.bfloat16_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples: a result read back from JSON compares equal)."""
        return {**asdict(self), "cpu_flags": list(self.cpu_flags), "speedup": self.speedup}


def cpu_flags() -> tuple[str, ...]:
    """The bfloat16-relevant flags of this CPU (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.split())
    return tuple(f for f in BF16_FLAGS if f in present)


def _best_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up: kernels chosen, caches filled
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def probe(device_type: str = "cpu", *, rows: int = 4096, repeats: int = 3) -> Probe:
    """Time a product of the encoder's shape (``rows`` tokens × 384 → 1536, MiniLM's feed-forward layer) in
    float32 and under bfloat16 autocast; choose bfloat16 when it is :data:`MIN_SPEEDUP` faster and within
    :data:`MAX_RELATIVE_ERROR`. Measured once per process (about a second on a CPU)."""
    device = torch.device(device_type)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Probe(device.type, 1.0, float("inf"), float("nan"), "float32", ())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 384, generator=gen).to(device)
    w = (torch.randn(1536, 384, generator=gen) / 384**0.5).to(device)

    def run(bf16: bool) -> torch.Tensor:
        with autocast("bfloat16" if bf16 else "float32", device):
            out = torch.nn.functional.linear(x, w)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    f32 = _best_seconds(lambda: run(False), repeats)
    b16 = _best_seconds(lambda: run(True), repeats)
    exact = run(False)
    error = float((run(True).float() - exact).norm() / exact.norm())
    ok = f32 / b16 >= MIN_SPEEDUP and error <= MAX_RELATIVE_ERROR
    flags = cpu_flags() if device.type == "cpu" else ()
    return Probe(device.type, f32, b16, error, "bfloat16" if ok else "float32", flags)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16``: the one asked for, or (``auto``) the probe's choice for ``device``.

    >>> resolve_precision("float32", torch.device("cpu"))
    'float32'
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    return probe(device.type).chosen if requested == "auto" else requested


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device``'s type, or nothing for float32."""
    if precision == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def float32_grad_samples(params: Iterable[torch.Tensor]) -> None:
    """Per-sample gradients (Opacus's ``grad_sample``) back in float32, as the parameters are: norms,
    clipping and noise then run in float32 whatever precision the forward pass used.

    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> p.grad_sample = torch.ones(3, 2, dtype=torch.bfloat16)
    >>> float32_grad_samples([p]); p.grad_sample.dtype
    torch.float32
    """
    for p in params:
        sample = getattr(p, "grad_sample", None)
        if isinstance(sample, list):
            p.grad_sample = [s.to(p.dtype) for s in sample]
        elif sample is not None and sample.dtype != p.dtype:
            p.grad_sample = sample.to(p.dtype)


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast for a forward pass without gradients (evaluation, prediction, frozen features)."""
    with torch.inference_mode(), autocast(precision, device):
        yield
