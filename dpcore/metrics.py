"""Multi-label metrics (scikit-learn underneath): the F1 family, AUROC, and their per-label views.

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


def evaluate(
    y_true: Any, probabilities: Any, *, label_names: Sequence[str], threshold: float | Sequence[float] = 0.5
) -> dict[str, Any]:
    """F1 family at ``threshold`` (one value, or one per label), AUROC, and prevalence of predictions."""
    probabilities = _as_2d("probabilities", probabilities, len(label_names))
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (len(label_names),))
    y_pred = (probabilities >= thresholds).astype(int)
    y_true = _as_2d("y_true", y_true, len(label_names)).astype(int)
    return {
        "f1": f1_scores(y_true, y_pred, label_names=label_names),
        "auroc": auroc_scores(y_true, probabilities, label_names=label_names),
        "support": {name: int(v) for name, v in zip(label_names, y_true.sum(0), strict=True)},
        "predicted_positive": {name: int(v) for name, v in zip(label_names, y_pred.sum(0), strict=True)},
        "n_examples": int(len(y_true)),
    }
