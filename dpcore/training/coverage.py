"""What epsilon covers, and what a run releases outside it.

DP-SGD's guarantee covers the trained weights (and whatever is computed from them alone on public data).
Everything else a run reports that was computed from private reports without noise (losses, exact counts,
tuned thresholds, the per-example losses of a membership attack) is outside epsilon: useful to the person
who trains, but a release the accountant never saw. Results, summaries and chapters say so by name.
"""

from __future__ import annotations

from typing import Any

from dpcore.training.result import PrivacyReport

# The mark every displayed private diagnostic carries.
OUTSIDE = "outside ε"
COVERED_PRIVATE = (
    "the trained weights (what training updated, under DP-SGD) and the probabilities they give new reports "
    "(the 0/1 labels too, unless their thresholds were tuned on the validation split)"
)
COVERED_NONE = "nothing: a non-private run has no privacy guarantee"

# Always computed from private reports without noise.
DIAGNOSTICS: dict[str, str] = {
    "epochs.train_loss": "mean training loss per epoch, on private training reports without noise",
    "epochs.val_loss": "validation loss per epoch, on private validation reports without noise",
    "metrics": "test and validation metrics and their counts (support, F1, intervals), on private reports "
    "without noise",
    "data": "the exact number of reports in each split",
}
# Computed when the run does what the key names.
OPTIONAL: dict[str, str] = {
    "extra.thresholds": "per-label thresholds tuned on the private validation split without noise",
    "extra.membership": "per-example losses of training and test reports (a membership attack's input)",
    "extra.warm_start": "the public model's scores on the private test split, without noise",
}
PRIVACY_FIELDS: dict[str, str] = {
    "privacy.units": "the exact number of units (reports or patients) in the training split",
    "privacy.max_reports_per_patient": "the largest number of reports one patient has in the training split",
    "privacy.group_epsilon": "derived from the largest number of reports per patient (a private count)",
    "privacy.group_delta": "derived from the largest number of reports per patient (a private count)",
}


def outside_epsilon(*, private: bool, extra: dict[str, Any], privacy: PrivacyReport | None) -> dict[str, str]:
    """The fields of a result computed from private data without noise, each with what it is.

    >>> sorted(outside_epsilon(private=True, extra={"thresholds": [0.5]}, privacy=None))[:3]
    ['data', 'epochs.train_loss', 'epochs.val_loss']
    >>> "model" in outside_epsilon(private=False, extra={}, privacy=None)
    True
    """
    out = dict(DIAGNOSTICS)
    out.update({key: why for key, why in OPTIONAL.items() if key.split(".", 1)[1] in extra})
    if privacy is not None:
        out.update(PRIVACY_FIELDS)
    if not private:
        out["model"] = "the trained weights themselves: a non-private run protects nothing"
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
