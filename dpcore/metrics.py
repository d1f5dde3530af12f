"""Multi-label metrics (scikit-learn underneath): the F1 family, AUROC, their per-label views, and bootstrap
intervals of the F1 family.

>>> import numpy as np
>>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
>>> m = f1_scores(y, y, label_names=["a", "b"])
>>> m["weighted"], m["micro"], m["macro"], m["per_label"]
(1.0, 1.0, 1.0, {'a': 1.0, 'b': 1.0})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def _as_2d(name: str, values: Any, n_labels: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [examples, labels], got shape {arr.shape}")
    if n_labels is not None and arr.shape[1] != n_labels:
        raise ValueError(f"{name} has {arr.shape[1]} label columns but {n_labels} label names were given")
    return arr


def f1_scores(y_true: Any, y_pred: Any, *, label_names: Sequence[str]) -> dict[str, Any]:
    """Weighted (by support, the paper's metric), micro, macro and per-label F1 of binary predictions.

    A label with neither true nor predicted positives scores 0 in the per-label view; it carries no weight
    in the weighted average.
    """
    y_true = _as_2d("y_true", y_true, len(label_names)).astype(int)
    y_pred = _as_2d("y_pred", y_pred, len(label_names)).astype(int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_label": {name: float(v) for name, v in zip(label_names, per_label, strict=True)},
    }


def auroc_scores(y_true: Any, scores: Any, *, label_names: Sequence[str]) -> dict[str, Any]:
    """Per-label AUROC and its macro mean over the labels that have both classes (others are None).

    >>> auroc_scores([[1], [0]], [[0.9], [0.1]], label_names=["a"])
    {'macro': 1.0, 'per_label': {'a': 1.0}}
    """
    y_true = _as_2d("y_true", y_true, len(label_names)).astype(int)
    scores = _as_2d("scores", scores, len(label_names)).astype(float)
    per_label: dict[str, float | None] = {}
    for j, name in enumerate(label_names):
        column = y_true[:, j]
        both = 0 < column.sum() < len(column)
        per_label[name] = float(roc_auc_score(column, scores[:, j])) if both else None
    defined = [v for v in per_label.values() if v is not None]
    return {"macro": float(np.mean(defined)) if defined else None, "per_label": per_label}


# Hand-written rather than ``f1_score`` in a loop: 1,000 calls of scikit-learn's f1_score on 1,000 reports x
# 18 labels take seconds (input validation dominates), and ``evaluate`` runs at the end of every training run.
# A bootstrap resample is a vector of counts (how often each report was drawn), so every resample's per-label
# TP / FP / FN is one matrix product of the counts with the reports' indicator columns.
def bootstrap_counts(n: int, *, n_resamples: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``[n_resamples, n]`` counts of each of ``n`` rows in resamples drawn with replacement (rows sum to n).

    >>> bootstrap_counts(3, n_resamples=2, seed=0).sum(axis=1).tolist()
    [3, 3]
    """
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def f1_from_counts(y_true: Any, y_pred: Any, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted, micro and macro F1 of every resample that ``counts`` (``[R, n]``) describes, as sklearn's
    ``f1_score(..., zero_division=0)`` gives them on the resampled rows: a label with neither true nor
    predicted positives scores 0 (counted in macro, weightless in weighted); no positives at all scores 0.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    columns = np.concatenate([y_true & y_pred, ~y_true & y_pred, y_true & ~y_pred], axis=1)
    tp, fp, fn = np.split(np.asarray(counts, dtype=float) @ columns.astype(float), 3, axis=1)
    denominator = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    support = tp + fn
    total = support.sum(axis=1)
    weighted = np.divide((per_label * support).sum(axis=1), total, out=np.zeros_like(total), where=total > 0)
    micro_den = denominator.sum(axis=1)
    micro = np.divide(2 * tp.sum(axis=1), micro_den, out=np.zeros_like(micro_den), where=micro_den > 0)
    return {"weighted": weighted, "micro": micro, "macro": per_label.mean(axis=1), "per_label": per_label}


def bootstrap_f1(
    y_true: Any,
    y_pred: Any,
    *,
    label_names: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals (over test reports, resampled with replacement) of weighted, micro and
    macro F1, and of each label's F1 (``per_label``: name -> interval). Intervals are ``[lo, hi]``, or None
    when there are no reports.

    >>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 5)
    >>> ci = bootstrap_f1(y, y, label_names=["a", "b"], n_resamples=200)
    >>> ci["weighted"], ci["n_resamples"], ci["level"]
    ([1.0, 1.0], 200, 0.95)
    """
    y_true = _as_2d("y_true", y_true, len(label_names))
    y_pred = _as_2d("y_pred", y_pred, len(label_names))
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1, got {n_resamples} and {level}")
    n = len(y_true)
    out: dict[str, Any] = {"weighted": None, "micro": None, "macro": None}
    per_label: dict[str, Any] = {name: None for name in label_names}
    if n > 0:
        # Resamples in blocks of about two million counts: bounded memory on large test sets.
        block = max(1, 2_000_000 // n)
        rng = np.random.default_rng(seed)
        parts = [
            f1_from_counts(
                y_true, y_pred, bootstrap_counts(n, n_resamples=min(block, n_resamples - start), seed=rng)
            )
            for start in range(0, n_resamples, block)
        ]
        q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
        for key in out:
            values = np.concatenate([p[key] for p in parts])
            out[key] = [float(v) for v in np.percentile(values, q)]
        bounds = np.percentile(np.concatenate([p["per_label"] for p in parts]), q, axis=0)
        per_label = {name: [float(lo), float(hi)] for name, lo, hi in zip(label_names, *bounds, strict=True)}
    return {**out, "per_label": per_label, "n_resamples": int(n_resamples), "level": float(level)}


def evaluate(
    y_true: Any,
    probabilities: Any,
    *,
    label_names: Sequence[str],
    threshold: float | Sequence[float] = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """F1 family at ``threshold`` (one value, or one per label), AUROC, and prevalence of predictions.

    ``f1_ci`` holds bootstrap 95% intervals of the F1 family over ``n_resamples`` resamples of the reports
    (see :func:`bootstrap_f1`); ``n_resamples=0`` leaves them out.
    """
    probabilities = _as_2d("probabilities", probabilities, len(label_names))
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (len(label_names),))
    y_pred = (probabilities >= thresholds).astype(int)
    y_true = _as_2d("y_true", y_true, len(label_names)).astype(int)
    out = {
        "f1": f1_scores(y_true, y_pred, label_names=label_names),
        "auroc": auroc_scores(y_true, probabilities, label_names=label_names),
        "support": {name: int(v) for name, v in zip(label_names, y_true.sum(0), strict=True)},
        "predicted_positive": {name: int(v) for name, v in zip(label_names, y_pred.sum(0), strict=True)},
        "n_examples": int(len(y_true)),
    }
    if n_resamples:
        out["f1_ci"] = bootstrap_f1(
            y_true, y_pred, label_names=label_names, n_resamples=n_resamples, seed=seed
        )
    return out
