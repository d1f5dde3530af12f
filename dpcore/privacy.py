"""Privacy accounting: a thin, pure layer over Opacus's accountants. No training state lives here.

A DP-SGD run is summarised by its *history*: ``(noise_multiplier, sample_rate, steps)`` triples, the form
Opacus's accountants keep. Epsilon is reported from both the RDP and the PRV accountant.

>>> round(epsilon_spent(history=[(1.5, 0.04, 2250)], delta=1e-5, accountant="rdp"), 5)
7.32911
>>> default_delta(2000)
1e-05
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.accountant import IAccountant
from opacus.accountants.utils import get_noise_multiplier

History = Sequence[tuple[float, float, int]]
ACCOUNTANT_CLASSES: dict[str, type[IAccountant]] = {"rdp": RDPAccountant, "prv": PRVAccountant}
# Opacus's RDP orders stop at 63, where the RDP-to-DP conversion alone costs about log(1/delta)/62:
# epsilon below ~0.1 (the paper goes to 0.01) cannot be certified without larger orders.
# Integer orders only: Opacus's fractional-order series is slow for large orders, and orders past ~2000
# overflow to NaN.
RDP_ORDERS: list[float] = list(RDPAccountant.DEFAULT_ALPHAS) + [
    64,
    80,
    96,
    128,
    160,
    192,
    256,
    384,
    512,
    768,
    1024,
]


def default_delta(n: int) -> float:
    """The largest power of ten at most ``1 / (10 n)``: comfortably below 1/N, as DP practice asks."""
    if n <= 0:
        raise ValueError(f"the data set size must be positive, got {n}")
    return 10.0 ** -math.ceil(math.log10(n) + 1)


def check_delta(delta: float, n: int) -> float:
    """``delta`` itself if it is below ``1 / n``; otherwise a ``ValueError`` that says why."""
    if not 0 < delta < 1 / n:
        raise ValueError(
            f"delta={delta:g} must be below 1/N = {1 / n:.3g} for N={n} training examples: "
            "a larger delta allows releasing an example outright"
        )
    return delta


def make_accountant(name: str) -> IAccountant:
    """A fresh Opacus accountant, ``rdp`` or ``prv``."""
    try:
        return ACCOUNTANT_CLASSES[name]()
    except KeyError:
        raise ValueError(f"unknown accountant {name!r}; use one of {sorted(ACCOUNTANT_CLASSES)}") from None


def epsilon_spent(*, history: History, delta: float, accountant: str) -> float:
    """Epsilon after the steps in ``history`` at ``delta``, from one accountant (inf without noise)."""
    steps = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not steps:
        return 0.0
    if any(s == 0 for s, _, _ in steps):
        return math.inf
    acc = make_accountant(accountant)
    acc.history = list(steps)
    with warnings.catch_warnings():
        # RDP warns when the optimal order is at the edge of its alpha grid; the bound is still valid.
        warnings.simplefilter("ignore", UserWarning)
        eps = float(acc.get_epsilon(delta=delta, **_options(accountant)))
        if accountant == "prv" and eps < 1:
            # PRV's default error allowance is absolute (0.01): refine it where it would dominate.
            eps = float(acc.get_epsilon(delta=delta, **_options("prv", eps)))
        return eps


def epsilons(*, history: History, delta: float) -> dict[str, float]:
    """Epsilon from every accountant, keyed by accountant name."""
    return {name: epsilon_spent(history=history, delta=delta, accountant=name) for name in ACCOUNTANT_CLASSES}


def noise_for_epsilon(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier (to Opacus's tolerance) that keeps ``steps`` Poisson-sampled steps
    within ``(target_epsilon, delta)`` under ``accountant``.

    >>> s = noise_for_epsilon(target_epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=1000)
    >>> epsilon_spent(history=[(s, 0.01, 1000)], delta=1e-5, accountant="rdp") <= 1.0
    True
    """
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                # Opacus's default search ceiling (sigma 10) is far too low for epsilon 0.01.
                epsilon_tolerance=min(0.01, target_epsilon / 10),
                **_options(accountant, target_epsilon),
            )
        )


def _options(accountant: str, scale: float = 1.0) -> dict[str, object]:
    """Accountant keyword arguments: RDP's orders, PRV's error allowance for epsilons near ``scale``."""
    if accountant == "rdp":
        return {"alphas": RDP_ORDERS}
    return {"eps_error": min(0.01, max(scale / 50, 1e-4))}


def group_privacy(*, epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """The guarantee an ``(epsilon, delta)``-DP mechanism gives a group of ``k`` units (a patient with ``k``
    reports at the report unit): ``(k epsilon, k e^((k-1) epsilon) delta)`` (Vadhan, "The Complexity of
    Differential Privacy", Lemma 2.2; pure epsilon: Dwork and Roth, Theorem 2.2). The delta is capped at 1,
    where the bound says nothing.

    >>> group_privacy(epsilon=1.0, delta=1e-6, k=1)
    (1.0, 1e-06)
    >>> eps, d = group_privacy(epsilon=1.0, delta=1e-6, k=3)
    >>> eps, round(d, 10)
    (3.0, 2.21672e-05)
    """
    if k < 1:
        raise ValueError(f"a group has at least one unit, got k={k}")
    return k * epsilon, min(1.0, k * math.exp((k - 1) * epsilon) * delta)
