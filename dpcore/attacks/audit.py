r"""An empirical audit of the DP guarantee in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

m canaries (:mod:`dpcore.attacks.audit_canaries`) are each put in the training split independently with
probability 1/2; one model trains; every canary is scored (-loss against its random labels); the auditor
guesses "in" for the k+ highest scores, "out" for the k- lowest and abstains on the rest. If training is
(ε, δ)-DP, many correct guesses are unlikely, and the number of correct ones gives a lower bound on ε at a
stated confidence. A bound above the accountant's ε means the implementation (or its accounting) is wrong.

**The bound** (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023,
arXiv:2305.08846: the main theorem for (ε, δ)-DP, Theorem 5.2 with Corollary 5.4 there; the algorithm of
its Appendix D). With S the uniformly random inclusion vector, r guesses and W the number of correct ones,
(ε, δ)-DP implies for every v

.. math::

    P[W \ge v] \le P[B \ge v] + 2 m \delta \max_{1 \le i \le v} \tfrac{1}{i} P[v - i \le B < v],
    \qquad B \sim \mathrm{Binomial}\big(r, \tfrac{e^\varepsilon}{1 + e^\varepsilon}\big).

The right side is a p-value for the hypothesis "the run is (ε, δ)-DP"; the lower bound at confidence
1 - β is the largest ε the observed v rejects at level β (the p-value grows with ε; found by bisection).
With δ = 0 it is the pure-ε binomial test.

**Multiple testing.** The number of guesses must be fixed before looking at which canaries were in. We try
a small grid of (k+, k-) and test each at level β / (grid size): by the union bound the best of them is
still a valid bound at confidence 1 - β (Bonferroni; a single pre-chosen pair needs no correction).

**What is assumed.** Canaries are the randomised part of the input; the rest of the data is fixed. The
training-set size (hence Opacus's sample rate 1 / ceil(N / B), the noise found for a target ε, and the
default δ) is treated as public, as the accountants do: δ is fixed from the largest possible N so that it
does not depend on which canaries were drawn.

**What is audited.** The run that trains is the mechanism the accountant certified: its sample rate, noise
and steps are derived from N = the natural units plus the canaries included (each canary is its own unit,
a report or a patient), and :func:`one_run_audit` refuses a run whose accountant counted anything else.

>>> round(epsilon_lower_bound(m=1000, guesses=100, correct=75, delta=1e-4, confidence=0.95), 3)
0.673
>>> epsilon_lower_bound(m=100, guesses=10, correct=5, delta=0.0, confidence=0.95)
0.0
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
from scipy import special, stats

from dpcore.attacks.audit_canaries import CANARY_KIND, append_canaries, make_canaries
from dpcore.attacks.membership_losses import example_losses
from dpcore.config import RunConfig
from dpcore.pipeline import prepare_splits, train
from dpcore.privacy import default_delta
from dpcore.training import PrivacyReport
from dpcore.training.run import privacy_units

# Guess counts r of the default grid, as fractions of m (k+ = ceil(r / 2) "in", the rest "out").
DEFAULT_GUESS_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)


class AuditViolation(AssertionError):
    """The audit's lower bound exceeds the ε the accountants report: the guarantee does not hold."""


# -- the bound ---------------------------------------------------------------------------------------------
def p_value(*, m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """The probability bound of ``correct`` or more correct guesses out of ``guesses`` under (ε, δ)-DP.

    >>> round(p_value(m=10, guesses=2, correct=2, epsilon=0.0, delta=0.0), 6)  # two fair coins
    0.25
    """
    _check_counts(m, guesses, correct)
    if not (epsilon >= 0 and 0 <= delta < 1):
        raise ValueError(f"need epsilon >= 0 and 0 <= delta < 1, got {epsilon}, {delta}")
    if correct == 0:
        return 1.0
    q = special.expit(epsilon)  # e^ε / (1 + e^ε): the accuracy of ε-DP randomised response
    tail = float(stats.binom.sf(correct - 1, guesses, q))  # P[B >= v]
    if delta == 0:
        return min(tail, 1.0)
    # max over i of P[v - i <= B < v] / i. The window is at most P[B < v] = 1 - tail, so blocks of i stop as
    # soon as (1 - tail) / i cannot beat the best so far (millions of canaries stay cheap).
    best, start, size = 0.0, 1, 256
    while start <= correct and (1 - tail) / start > best:
        i = np.arange(start, min(correct, start + size - 1) + 1)
        window = stats.binom.sf(correct - i - 1, guesses, q) - tail  # P[v - i <= B < v]
        best = max(best, float(np.max(window / i)))
        start, size = int(i[-1]) + 1, 2 * size
    return float(min(tail + 2 * m * delta * best, 1.0))


def epsilon_lower_bound(
    *, m: int, guesses: int, correct: int, delta: float, confidence: float = 0.95, tol: float = 1e-7
) -> float:
    """The largest ε that ``correct`` of ``guesses`` rejects at level 1 - ``confidence`` (0 if none).

    >>> round(epsilon_lower_bound(m=20, guesses=20, correct=20, delta=0.0), 4)  # log(q / (1 - q)), q^20 = 0.05
    1.8227
    """
    _check_counts(m, guesses, correct)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1 - confidence

    def rejects(eps: float) -> bool:
        return p_value(m=m, guesses=guesses, correct=correct, epsilon=eps, delta=delta) < level

    if not rejects(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejects(hi):
        lo, hi = hi, 2 * hi
        if hi > 1e3:  # v = r with tiny δ: only the guess count limits the bound
            return lo
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
    return lo


def _check_counts(m: int, guesses: int, correct: int) -> None:
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct <= guesses <= m, got {correct}, {guesses}, {m}")


def guess_grid(m: int, fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS) -> list[tuple[int, int]]:
    """(k+, k-) pairs: r = round(f m) guesses for each fraction f, split evenly, k+ taking the odd one.

    >>> guess_grid(200)
    [(10, 10), (25, 25), (50, 50), (100, 100)]
    """
    pairs = []
    for f in fractions:
        r = max(1, min(m, round(f * m)))
        pair = (math.ceil(r / 2), r // 2)
        if pair not in pairs:
            pairs.append(pair)
    return pairs


@dataclass(frozen=True)
class GuessTest:
    """One (k+, k-) choice: its guesses, how many were right, and the bound at the corrected level."""

    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    epsilon_lower: float


@dataclass(frozen=True)
class AuditBound:
    """The audit of one set of canary scores: the best test of the grid and every test tried."""

    m: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    confidence: float
    delta: float
    epsilon_lower: float
    tests: list[GuessTest]


def audit_scores(
    *,
    scores: Sequence[float],
    included: Sequence[bool],
    delta: float,
    confidence: float = 0.95,
    grid: Sequence[tuple[int, int]] | None = None,
) -> AuditBound:
    """Guess from ``scores`` (higher: more likely in) and bound ε from the correct guesses, over ``grid``
    (default :func:`guess_grid`) with the Bonferroni correction for its size."""
    s = np.asarray(scores, dtype=float)
    truth = np.asarray(included, dtype=bool)
    m = s.size
    if truth.shape != s.shape or m == 0:
        raise ValueError(f"need one inclusion flag per score, got {truth.size} flags for {m} scores")
    grid = list(grid) if grid is not None else guess_grid(m)
    if any(kp < 0 or km < 0 or kp + km > m for kp, km in grid):
        raise ValueError(f"every (k+, k-) needs k+ + k- <= m = {m}, got {grid}")
    order = np.argsort(-s, kind="stable")  # highest score first
    corrected = 1 - (1 - confidence) / len(grid)
    tests = []
    for kp, km in grid:
        correct = int(truth[order[:kp]].sum() + (~truth[order[m - km :]]).sum())
        bound = epsilon_lower_bound(m=m, guesses=kp + km, correct=correct, delta=delta, confidence=corrected)
        tests.append(GuessTest(kp, km, kp + km, correct, bound))
    best = max(tests, key=lambda t: t.epsilon_lower)
    return AuditBound(
        m, best.k_plus, best.k_minus, best.guesses, best.correct, confidence, delta, best.epsilon_lower, tests
    )


# -- one training run --------------------------------------------------------------------------------------
@dataclass
class AuditResult:
    """A one-run audit: the bound beside the run's accountant ε (None for a non-private run)."""

    bound: AuditBound
    mode: str
    config_hash: str
    included: int
    epsilon_rdp: float | None
    epsilon_prv: float | None
    delta: float
    noise_multiplier: float | None
    canary_kind: str
    scores: list[float] = field(repr=False)
    inclusion: list[bool] = field(repr=False)
    weighted_f1: float = math.nan
    seconds: float = math.nan
    # The mechanism audited: its unit, how its per-sample gradients were computed, the units the accountant
    # counted (the natural ones plus the canaries included), its sample rate and its steps.
    unit: str = "report"
    grad_sample_mode: str | None = None
    natural_units: int = 0
    units: int | None = None
    sample_rate: float | None = None
    steps: int | None = None
    # The trained model, when asked for (``one_run_audit(..., keep_model=True)``); never serialised.
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def epsilon_lower(self) -> float:
        return self.bound.epsilon_lower

    @property
    def reported_epsilon(self) -> float:
        """The tightest ε the accountants report (inf for a run without DP)."""
        found = [e for e in (self.epsilon_rdp, self.epsilon_prv) if e is not None and not math.isnan(e)]
        return min(found) if found else math.inf

    def consistent(self, *, tolerance: float = 0.0) -> bool:
        """True when the lower bound does not exceed the reported ε (plus ``tolerance``)."""
        return self.epsilon_lower <= self.reported_epsilon + tolerance

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, model=None))
        out.pop("model")
        out.update(epsilon_lower=self.epsilon_lower, reported_epsilon=self.reported_epsilon)
        return out


def check_consistent(result: AuditResult, *, tolerance: float = 0.0) -> AuditResult:
    """``result`` itself if its bound is within the reported ε; otherwise :class:`AuditViolation`."""
    if not result.consistent(tolerance=tolerance):
        b = result.bound
        raise AuditViolation(
            f"audit lower bound ε >= {b.epsilon_lower:.3f} at {b.confidence:.0%} confidence ({b.correct} of "
            f"{b.guesses} guesses right, m = {b.m} canaries) exceeds the reported ε = "
            f"{result.reported_epsilon:.3f} (δ = {result.delta:g}): the run is not as private as reported"
        )
    return result


def one_run_audit(
    cfg: RunConfig,
    splits: datasets.DatasetDict | None = None,
    *,
    canaries: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    grid: Sequence[tuple[int, int]] | None = None,
    progress: bool = False,
    keep_model: bool = False,
) -> AuditResult:
    """Train ``cfg`` once with ``canaries`` random-label canaries, each included with probability 1/2, and
    audit it. ``splits`` default to the configuration's own (:func:`dpcore.pipeline.prepare_splits`).

    The canaries and their inclusion are drawn from ``seed``; δ is fixed (unless ``cfg`` sets it) from the
    largest training set the draw could give, so that it does not depend on the draw. ``keep_model``
    keeps the trained model in the result (for attacks on the run's other reports).
    """
    t0 = time.perf_counter()
    splits = splits if splits is not None else prepare_splits(cfg)
    if cfg.is_private and cfg.privacy.delta is None:
        cfg = cfg.replace(delta=default_delta(len(splits["train"]) + canaries))
    pool = make_canaries(m=canaries, label_set=cfg.teacher.label_set, model=cfg.model.model, seed=seed)
    inclusion = np.random.default_rng([seed, 1]).random(canaries) < 0.5
    train_splits = datasets.DatasetDict(
        {**splits, "train": append_canaries(splits["train"], pool, inclusion)}
    )
    result = train(cfg, train_splits, progress=progress, keep_model=True)
    assert result.model is not None
    natural = len(privacy_units(cfg, splits["train"], len(splits["train"])))
    privacy = result.privacy
    check_accounted(privacy, natural=natural, included=int(inclusion.sum()))
    scores = -example_losses(result.model, pool, cfg=cfg)
    delta = (
        privacy.delta
        if privacy is not None
        else (cfg.privacy.delta or default_delta(len(splits["train"]) + canaries))
    )
    bound = audit_scores(scores=scores, included=inclusion, delta=delta, confidence=confidence, grid=grid)
    return AuditResult(
        bound=bound,
        mode=cfg.train.mode,
        config_hash=cfg.config_hash(),
        included=int(inclusion.sum()),
        epsilon_rdp=privacy.epsilon_rdp if privacy is not None else None,
        epsilon_prv=privacy.epsilon_prv if privacy is not None else None,
        delta=delta,
        noise_multiplier=privacy.noise_multiplier if privacy is not None else None,
        canary_kind=CANARY_KIND,
        scores=scores.tolist(),
        inclusion=inclusion.tolist(),
        # NaN, as unmeasured, where the corpus has no reference labels.
        weighted_f1=math.nan if result.weighted_f1 is None else result.weighted_f1,
        seconds=time.perf_counter() - t0,
        model=result.model if keep_model else None,
        unit=cfg.privacy.privacy_unit,
        grad_sample_mode=privacy.grad_sample_mode if privacy is not None else None,
        natural_units=natural,
        units=privacy.units if privacy is not None else None,
        sample_rate=privacy.sample_rate if privacy is not None else None,
        steps=privacy.steps if privacy is not None else None,
    )


def check_accounted(privacy: PrivacyReport | None, *, natural: int, included: int) -> None:
    """Refuse a canaries' run whose accountant did not count the natural units plus the canaries included:
    its ε (and the q, σ and steps behind it) would belong to another mechanism than the one that trained."""
    if privacy is not None and privacy.units != natural + included:
        raise ValueError(
            f"privacy.units: the canaries' run was accounted over {privacy.units} units, not the {natural} "
            f"natural units plus the {included} canaries it trained on"
        )


def max_bound(
    *, m: int, delta: float, confidence: float = 0.95, grid: Sequence[tuple[int, int]] | None = None
) -> float:
    """The largest bound an audit of ``m`` canaries can give: every guess of the grid right.

    >>> max_bound(m=200, delta=0.0) > max_bound(m=50, delta=0.0)
    True
    """
    grid = list(grid) if grid is not None else guess_grid(m)
    corrected = 1 - (1 - confidence) / len(grid)
    return max(
        epsilon_lower_bound(m=m, guesses=kp + km, correct=kp + km, delta=delta, confidence=corrected)
        for kp, km in grid
    )
