"""What epsilon covers, and what a run releases outside it.

DP-SGD's guarantee covers the trained weights (and whatever is computed from them alone on public data).
Everything else a run reports that was computed from private reports without noise (losses, exact counts,
tuned thresholds, the per-example losses of a membership attack) is outside epsilon: useful to the person
who trains, but a release the accountant never saw. Results, summaries and chapters say so by name.
"""

from __future__ import annotations

from typing import Any

from dpcore.training.released import RESULT, Registry, outside_fields

# The mark every displayed private diagnostic carries.
OUTSIDE = "outside ε"
COVERED_PRIVATE = (
    "the trained weights (what training updated, under DP-SGD) and the probabilities they give new reports "
    "(the 0/1 labels too, unless their thresholds were tuned on the validation split)"
)
COVERED_NONE = "nothing: a non-private run has no privacy guarantee"
NOT_PRIVATE = "the trained weights themselves: a non-private run protects nothing"


def outside_epsilon(
    document: dict[str, Any], *, private: bool, registry: Registry = RESULT
) -> dict[str, str]:
    """The fields of ``document`` (a result's or a manifest's JSON) released outside epsilon, each with what
    it reveals (the registry :mod:`dpcore.training.released`); a non-private run adds its weights.

    >>> sorted(outside_epsilon({"data": {"train": 8}, "timings": {"train_seconds": 1.0}}, private=True))
    ['data', 'timings']
    >>> "model" in outside_epsilon({}, private=False)
    True
    """
    out = outside_fields(document, registry=registry)
    if not private:
        out["model"] = NOT_PRIVATE
    return out


def covered_by_epsilon(*, private: bool) -> str:
    return COVERED_PRIVATE if private else COVERED_NONE


def mark(text: str) -> str:
    """``text`` with the outside-epsilon mark, for tables, legends and summaries.

    >>> mark("validation loss")
    'validation loss (outside ε)'
    """
    return f"{text} ({OUTSIDE})"


def run_summary(result: Any) -> dict[str, Any]:
    """What ``dpcore train`` prints: the guarantee first, then the diagnostics under ``outside_epsilon``.

    Every number computed from private data without noise sits in the ``outside_epsilon`` block, so that
    nobody reads a test F1 or a patient count as covered by the epsilon printed above it.
    """
    p = result.privacy
    summary: dict[str, Any] = {
        "config_hash": result.config_hash,
        "mode": result.mode,
        "covered_by_epsilon": result.covered_by_epsilon,
    }
    if p is not None:
        summary.update(
            privacy_unit=p.unit,
            epsilon_rdp=p.epsilon_rdp,
            epsilon_prv=p.epsilon_prv,
            delta=p.delta,
            secure_rng=p.secure_rng,
        )
    diagnostics: dict[str, Any] = {
        "note": "computed from private data without noise; the epsilon above does not cover these",
        # None (and said why) when the corpus has no reference labels; agreement with the teacher always.
        "test_weighted_f1": result.weighted_f1,
        "test_weighted_f1_vs_teacher": result.teacher_weighted_f1,
        "train_loss_last_epoch": result.epochs[-1].train_loss if result.epochs else None,
        "val_loss_last_epoch": result.epochs[-1].val_loss if result.epochs else None,
    }
    if not result.has_reference_labels:
        diagnostics["reference_labels"] = result.metrics.get("no_reference", "none")
    if p is not None:
        diagnostics.update(
            training_units=p.units,
            max_reports_per_patient=p.max_reports_per_patient,
            group_epsilon=p.group_epsilon,
            group_delta=p.group_delta,
        )
    if "thresholds" in result.extra:
        diagnostics["thresholds"] = "tuned on the validation split"
    summary["outside_epsilon"] = diagnostics
    summary.update(
        train_seconds=result.timings["train_seconds"],
        stop_reason=result.extra.get("stop_reason", "completed"),
        world_size=result.extra.get("world_size", 1),
    )
    return summary
