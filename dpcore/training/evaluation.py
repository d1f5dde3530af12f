"""Predictions and test metrics: probabilities in length-sorted batches, thresholds, the test split scored
against the reference labels and the teacher.

A corpus without reference labels (a hospital's own reports: every value of the reference column is
``None``, the teacher is the only labeler) has no ``test_vs_reference`` metrics: the key holds ``None``,
never a score computed against labels that do not exist.
"""

from __future__ import annotations

import math
import resource
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

from dpcore.config import RunConfig
from dpcore.metrics import evaluate
from dpcore.training.data import EncodedReports, per_example_loss, targets_from_labels


@torch.no_grad()
def _outputs(model: nn.Module, loader: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities ``[n, n_labels]`` and per-example losses ``[n]`` over ``loader``, in its order."""
    was_training = model.training
    model.eval()
    probs, losses = [], []
    for ids, mask, targets in loader:
        logits = model(ids.to(device), mask.to(device))
        losses.append(per_example_loss(logits, targets.to(device)).cpu())
        probs.append(torch.sigmoid(logits).cpu())
    model.train(was_training)
    if not probs:
        return torch.zeros((0, 0)), torch.zeros(0)
    return torch.cat(probs), torch.cat(losses)


def predict(model: nn.Module, loader: Any, device: torch.device) -> tuple[np.ndarray, float]:
    """Probabilities ``[n, n_labels]`` and the mean per-example loss over ``loader``."""
    probs, losses = _outputs(model, loader, device)
    return probs.numpy(), float(losses.mean()) if len(losses) else math.nan


def _sorted_outputs(
    model: nn.Module, data: EncodedReports, collate: Any, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``_outputs`` over ``data`` in length-sorted batches (little padding), returned in the original order."""
    lengths = torch.tensor([len(x) for x in data.input_ids])
    order = torch.argsort(lengths, stable=True)
    batches = [collate([data[i] for i in chunk.tolist()]) for chunk in order.split(batch_size)]
    probs, losses = _outputs(model, batches, device)
    out_probs, out_losses = np.empty_like(probs.numpy()), np.empty(len(data), dtype=np.float64)
    out_probs[order.numpy()] = probs.numpy()
    out_losses[order.numpy()] = losses.numpy()
    return out_probs, out_losses


def predict_reports(
    model: nn.Module, data: EncodedReports, collate: Any, device: torch.device, batch_size: int = 128
) -> tuple[np.ndarray, float]:
    """Probabilities of every report of ``data`` (in its order) and their mean loss."""
    if len(data) == 0:
        return np.zeros((0, 0)), math.nan
    probs, losses = _sorted_outputs(model, data, collate, device, batch_size)
    return probs, float(losses.mean())


def example_losses(
    model: nn.Module, data: EncodedReports, collate: Any, device: torch.device, batch_size: int = 128
) -> np.ndarray:
    """The per-example loss of every report of ``data`` (in its order): what a membership attack reads."""
    if len(data) == 0:
        return np.zeros(0)
    return _sorted_outputs(model, data, collate, device, batch_size)[1]


# Why a result has no metrics against the reference labels (results, summaries and the model card say it).
NO_REFERENCE = "no reference labels: the corpus has none (the teacher is the only labeler)"


def has_reference_labels(rows: Any) -> bool:
    """Whether any report of ``rows`` (label vectors) carries a reference label value (not ``None``).

    >>> has_reference_labels([[None, None], [None, 0]]), has_reference_labels([[None, None]])
    (True, False)
    """
    return any(v is not None for row in rows for v in row)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per-label thresholds that maximise F1 on ``(y_true, probs)`` (a grid from 0.05 to 0.95)."""
    grid = np.linspace(0.05, 0.95, 19)
    out = []
    for j in range(y_true.shape[1]):
        truth = y_true[:, j] > 0
        best, best_t = -1.0, 0.5
        for t in grid:
            pred = probs[:, j] >= t
            tp = float((pred & truth).sum())
            f1 = 2 * tp / max(1.0, float(pred.sum() + truth.sum()))
            if f1 > best:
                best, best_t = f1, float(t)
        out.append(best_t)
    return out


def evaluate_test(
    cfg: RunConfig,
    inner: nn.Module,
    enc: dict[str, EncodedReports],
    splits: datasets.DatasetDict,
    collate: Any,
    device: torch.device,
    *,
    label_column: str,
    reference_column: str,
    label_names: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics against the reference and the teacher, validation metrics against the teacher, and what
    the thresholds were (with a warning when they were tuned on private validation data)."""
    policy = cfg.teacher.uncertainty_policy
    eval_policy = "u-ones" if policy == "ignore" else policy
    threshold: float | list[float] = cfg.train.threshold
    extra: dict[str, Any] = {}
    val_probs, _ = predict_reports(inner, enc["validation"], collate, device)
    val_truth = targets_from_labels(splits["validation"][label_column], policy=eval_policy)
    if cfg.train.threshold_policy == "validation":
        threshold = tune_thresholds(val_truth, val_probs)
        extra["thresholds"] = threshold
        if cfg.is_private:
            extra["privacy_warning"] = (
                "per-label thresholds were tuned on the validation split without privacy: they are a "
                "release of private data that the reported epsilon does not cover"
            )
    probs, _ = predict_reports(inner, enc["test"], collate, device)
    test = splits["test"]
    teacher = targets_from_labels(test[label_column], policy=eval_policy)
    metrics: dict[str, Any] = {"test_vs_reference": None}
    if reference_column in test.column_names and has_reference_labels(test[reference_column]):
        reference = targets_from_labels(test[reference_column], policy=eval_policy)
        metrics["test_vs_reference"] = evaluate(
            reference, probs, label_names=label_names, threshold=threshold
        )
    else:
        metrics["no_reference"] = NO_REFERENCE
    metrics["test_vs_teacher"] = evaluate(teacher, probs, label_names=label_names, threshold=threshold)
    if len(val_truth):
        # Against the teacher, the only labels a real user has on validation reports: what schedules and
        # other choices are made on (never on the test split).
        metrics["validation_vs_teacher"] = evaluate(
            val_truth, val_probs, label_names=label_names, threshold=threshold, n_resamples=0
        )
    return metrics, extra


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Process-wide peak resident set size (Linux reports kilobytes).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
