"""Membership inference on the classifiers: does a model's loss on a report tell whether it trained on it?

Two attacks, both computed from per-example losses (so they apply to any trained classifier):

- **loss threshold** (Yeom et al., 2018): score = -loss; training reports tend to have lower loss.
- **calibrated** (offline difficulty calibration, Watson et al., ICLR 2022): score = reference loss - target
  loss, the reference model trained on public data disjoint from the private data. A report that is hard for
  every model (its loss high under the reference too) no longer looks like a non-member.

Each attack gives AUROC and the TPR at low FPR (1% and 0.1%, Carlini et al., 2022), with stratified
bootstrap 95% intervals (members and non-members resampled separately, all resamples at once), and the ROC
curve. The losses are statistics of private data computed without noise: every number here is *outside*
the guarantee ε describes, and a report must say so.

>>> res = loss_attack(member_loss=[0.1, 0.2, 0.3], nonmember_loss=[0.25, 0.4, 0.5], n_bootstrap=200)
>>> round(res.auroc.value, 4)
0.8889
>>> res.tpr_at_fpr[0].fpr, res.tpr_at_fpr[0].resolved
(0.01, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from dpcore.attacks.membership_losses import example_losses, splits_losses

__all__ = [
    "AttackResult",
    "Estimate",
    "TprAtFpr",
    "attack_run",
    "auroc",
    "calibrated_attack",
    "example_losses",
    "loss_attack",
    "membership_entry",
    "roc_points",
    "score_attack",
    "splits_losses",
    "tpr_at_fpr",
]

DEFAULT_FPRS: tuple[float, ...] = (0.01, 0.001)
OUTSIDE_EPSILON = "computed from per-example losses of private reports without noise, which ε does not cover"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (``level``, percentile method)."""

    value: float
    lo: float
    hi: float
    level: float = 0.95


@dataclass(frozen=True)
class TprAtFpr:
    """The TPR of the best threshold whose FPR is at most ``fpr``.

    ``resolved`` is False when fewer than one non-member falls within ``fpr`` (``fpr * n_nonmembers < 1``):
    the only threshold with FPR <= ``fpr`` then has FPR 0, and the value is the TPR at FPR 0 (a lower
    estimate, from the single highest-scoring non-member), not a measurement at ``fpr``.
    """

    fpr: float
    estimate: Estimate
    resolved: bool


@dataclass(frozen=True)
class AttackResult:
    """One attack's scores summarised: AUROC, TPR at low FPR, the ROC curve, and notes to print with them."""

    attack: str
    n_members: int
    n_nonmembers: int
    auroc: Estimate
    tpr_at_fpr: list[TprAtFpr]
    roc_fpr: np.ndarray = field(repr=False)
    roc_tpr: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON friendly), the ROC curve as lists."""
        return {
            "attack": self.attack,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "auroc": vars(self.auroc),
            "tpr_at_fpr": [
                {"fpr": t.fpr, "resolved": t.resolved, **vars(t.estimate)} for t in self.tpr_at_fpr
            ],
            "roc_fpr": self.roc_fpr.tolist(),
            "roc_tpr": self.roc_tpr.tolist(),
            "notes": list(self.notes),
        }


# -- the statistics, for one sample and for a batch of bootstrap weights -----------------------------------
def _as_scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} values that are not finite")
    return arr


def _auroc_weighted(s: np.ndarray, t: np.ndarray, w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """AUROC (ties count 1/2) for each row of member weights ``w`` [B, n_m] and non-member weights ``u``
    [B, n_n]: sum_ij w_i u_j [s_i > t_j] + 1/2 [s_i = t_j], normalised. O(B (n_m + n_n)) by cumulative sums
    of ``u`` over the sorted non-member scores."""
    order = np.argsort(t, kind="stable")
    t_sorted = t[order]
    cum = np.concatenate([np.zeros((u.shape[0], 1)), np.cumsum(u[:, order], axis=1)], axis=1)
    below = np.searchsorted(t_sorted, s, side="left")  # non-members strictly below each member
    at_or_below = np.searchsorted(t_sorted, s, side="right")
    wins = cum[:, below] + 0.5 * (cum[:, at_or_below] - cum[:, below])  # [B, n_m]
    return (w * wins).sum(axis=1) / (w.sum(axis=1) * u.sum(axis=1))


def _tpr_weighted(s: np.ndarray, t: np.ndarray, w: np.ndarray, u: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at FPR <= ``fpr`` for each row of weights: the threshold is the (k+1)-th highest non-member score
    (k = floor(fpr * n_n)), and a report counts as a member when its score is strictly above it."""
    k = int(np.floor(fpr * u.sum(axis=1)[0] + 1e-9))
    order = np.argsort(-t, kind="stable")
    t_desc = t[order]
    from_top = np.cumsum(u[:, order], axis=1)  # non-members at or above each score, highest first
    first = np.argmax(from_top >= k + 1, axis=1)
    thresholds = t_desc[first]
    s_order = np.argsort(s, kind="stable")
    s_sorted = s[s_order]
    cum_w = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w[:, s_order], axis=1)], axis=1)
    at_or_below = np.searchsorted(s_sorted, thresholds, side="right")
    above = cum_w[:, -1] - cum_w[np.arange(w.shape[0]), at_or_below]
    return above / cum_w[:, -1]


def auroc(*, member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """The probability that a member scores above a non-member (ties count one half).

    >>> auroc(member_scores=[3, 2], nonmember_scores=[1, 2])
    0.875
    """
    s, t = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    return float(_auroc_weighted(s, t, np.ones((1, s.size)), np.ones((1, t.size)))[0])


def tpr_at_fpr(*, member_scores: Sequence[float], nonmember_scores: Sequence[float], fpr: float) -> float:
    """The largest TPR of a threshold on the scores whose FPR is at most ``fpr``.

    >>> tpr_at_fpr(member_scores=[5, 4, 3, 0], nonmember_scores=[3.5, 2, 1, 0.5], fpr=0.25)
    0.75
    """
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    s, t = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    return float(_tpr_weighted(s, t, np.ones((1, s.size)), np.ones((1, t.size)), fpr)[0])


def roc_points(
    *, member_scores: Sequence[float], nonmember_scores: Sequence[float]
) -> tuple[np.ndarray, ...]:
    """The ROC curve (FPR, TPR), from (0, 0) to (1, 1), one point per distinct score (scikit-learn's)."""

    s, t = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    fpr, tpr, _ = roc_curve(np.r_[np.ones(s.size), np.zeros(t.size)], np.r_[s, t], drop_intermediate=False)
    return fpr, tpr


# -- the attacks --------------------------------------------------------------------------------------------
def score_attack(
    *,
    member_scores: Sequence[float],
    nonmember_scores: Sequence[float],
    attack: str = "scores",
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> AttackResult:
    """AUROC and TPR at each of ``fprs`` for scores where higher means "member", with bootstrap intervals.

    The bootstrap resamples members and non-members separately (their counts stay fixed), ``n_bootstrap``
    times, as multinomial weights evaluated all at once.
    """
    s, t = _as_scores(member_scores, "member_scores"), _as_scores(nonmember_scores, "nonmember_scores")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    ones_w, ones_u = np.ones((1, s.size)), np.ones((1, t.size))
    w = rng.multinomial(s.size, np.full(s.size, 1 / s.size), size=n_bootstrap).astype(float)
    u = rng.multinomial(t.size, np.full(t.size, 1 / t.size), size=n_bootstrap).astype(float)
    tails = 100 * np.array([(1 - level) / 2, (1 + level) / 2])

    def estimate(point: float, boots: np.ndarray) -> Estimate:
        lo, hi = np.percentile(boots, tails) if n_bootstrap > 0 else (np.nan, np.nan)
        return Estimate(float(point), float(lo), float(hi), level)

    notes = []
    rows = []
    for fpr in fprs:
        resolved = fpr * t.size >= 1
        point = _tpr_weighted(s, t, ones_w, ones_u, fpr)[0]
        rows.append(TprAtFpr(fpr, estimate(point, _tpr_weighted(s, t, w, u, fpr)), resolved))
        if not resolved:
            notes.append(
                f"FPR {fpr:g} is below 1/n = {1 / t.size:.2g} for n = {t.size} non-members: it cannot be "
                f"resolved; the TPR shown is at FPR 0 (from the single highest-scoring non-member)"
            )
    fpr_curve, tpr_curve = roc_points(member_scores=s, nonmember_scores=t)
    return AttackResult(
        attack=attack,
        n_members=s.size,
        n_nonmembers=t.size,
        auroc=estimate(_auroc_weighted(s, t, ones_w, ones_u)[0], _auroc_weighted(s, t, w, u)),
        tpr_at_fpr=rows,
        roc_fpr=fpr_curve,
        roc_tpr=tpr_curve,
        notes=notes,
    )


def loss_attack(
    *, member_loss: Sequence[float], nonmember_loss: Sequence[float], **options: Any
) -> AttackResult:
    """The loss-threshold attack: score = -loss (``options`` as in :func:`score_attack`)."""
    return score_attack(
        member_scores=-_as_scores(member_loss, "member_loss"),
        nonmember_scores=-_as_scores(nonmember_loss, "nonmember_loss"),
        attack="loss",
        **options,
    )


def calibrated_attack(
    *,
    member_loss: Sequence[float],
    nonmember_loss: Sequence[float],
    member_reference_loss: Sequence[float],
    nonmember_reference_loss: Sequence[float],
    **options: Any,
) -> AttackResult:
    """Offline difficulty calibration (Watson et al., 2022): score = reference loss - target loss, the
    reference model trained on public data disjoint from the private data; losses paired by report."""
    pairs = {
        "member": (member_loss, member_reference_loss),
        "nonmember": (nonmember_loss, nonmember_reference_loss),
    }
    scores = {}
    for name, (target, reference) in pairs.items():
        a, b = _as_scores(target, f"{name}_loss"), _as_scores(reference, f"{name}_reference_loss")
        if a.shape != b.shape:
            raise ValueError(f"{a.size} {name} losses but {b.size} reference losses: pair them by report")
        scores[name] = b - a
    return score_attack(
        member_scores=scores["member"], nonmember_scores=scores["nonmember"], attack="calibrated", **options
    )


# -- from a stored run --------------------------------------------------------------------------------------
def membership_entry(result: Any) -> dict[str, Any] | None:
    """The ``extra["membership"]`` entry of a :class:`~dpcore.training.RunResult` (or its dict), if any."""
    extra = result.get("extra", {}) if isinstance(result, Mapping) else getattr(result, "extra", {})
    entry = (extra or {}).get("membership")
    return dict(entry) if entry else None


def attack_run(
    result: Any,
    *,
    member_reference_loss: Sequence[float] | None = None,
    nonmember_reference_loss: Sequence[float] | None = None,
    **options: Any,
) -> dict[str, AttackResult]:
    """The attacks on a run's stored losses (``TrainConfig.membership_sample`` > 0): the loss attack, and the
    calibrated one when reference losses of the same reports are given (in the entry's order).

    Raises ``ValueError`` when the run kept no membership sample.
    """
    entry = membership_entry(result)
    if entry is None or not entry.get("member_loss") or not entry.get("nonmember_loss"):
        raise ValueError(
            "the run kept no membership losses: train it with membership_sample > 0 (extra['membership'])"
        )
    member, nonmember = entry["member_loss"], entry["nonmember_loss"]
    out = {"loss": loss_attack(member_loss=member, nonmember_loss=nonmember, **options)}
    if member_reference_loss is not None and nonmember_reference_loss is not None:
        out["calibrated"] = calibrated_attack(
            member_loss=member,
            nonmember_loss=nonmember,
            member_reference_loss=member_reference_loss,
            nonmember_reference_loss=nonmember_reference_loss,
            **options,
        )
    return out
