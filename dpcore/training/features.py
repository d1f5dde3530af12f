"""The frozen lower layers' output, computed once per report and cached in the process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from dpcore.training.data import EncodedReports, pad_collate
from dpcore.training.precision import autocast

# Frozen-layer features by (weights, depth, token ids): the runs of a study that share a model and a corpus
# compute them once per process, and a deeper split starts from a shallower one's output (a truncated model
# keeps the first layers' weights, so the stand-ins of several sizes share them). Bounded by size.
_FEATURE_CACHE: dict[tuple[str, str, int], list[torch.Tensor]] = {}


_FEATURE_CACHE_BYTES = 6 * 2**30


def frozen_features(
    model: nn.Module,
    data: EncodedReports,
    *,
    device: torch.device,
    key: str,
    batch_size: int = 64,
    precision: str = "float32",
) -> EncodedReports:
    """``data`` with each report's token ids replaced by the output of ``model``'s frozen lower layers.

    Those layers never change in training, so their output is a fixed function of each report, computed
    once here (no privacy cost) instead of in every step. ``key`` names the weights (the model's path).
    Reports run in length-sorted batches, under ``precision``'s arithmetic (features are kept in float32,
    cached separately per precision).
    """
    key = f"{key}|{precision}"
    ids_hash = hashlib.sha256(b"".join(x.numpy().tobytes() + b"|" for x in data.input_ids)).hexdigest()
    depth = model.first_trainable
    features = _FEATURE_CACHE.get((key, ids_hash, depth))
    if features is None:
        shallower = [d for (k, h, d) in _FEATURE_CACHE if (k, h) == (key, ids_hash) and d < depth]
        start = max(shallower, default=0)
        inputs = _FEATURE_CACHE[(key, ids_hash, start)] if start else data.input_ids
        with autocast(precision, device):
            features = _run_frozen(model, inputs, start=start, device=device, batch_size=batch_size)
        _remember((key, ids_hash, depth), features)
    return EncodedReports(features, data.targets.numpy())


def _run_frozen(
    model: nn.Module, inputs: Sequence[torch.Tensor], *, start: int, device: torch.device, batch_size: int
) -> list[torch.Tensor]:
    lengths = torch.tensor([len(x) for x in inputs])
    out: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
    collate = pad_collate(0)
    for chunk in torch.argsort(lengths, stable=True).split(batch_size):
        batch, mask, _ = collate([(inputs[i], torch.zeros(0)) for i in chunk.tolist()])
        hidden = model.frozen_features(batch.to(device), mask.to(device), start=start).float().cpu()
        for row, i in enumerate(chunk.tolist()):
            out[i] = hidden[row, : lengths[i]].clone()
    return out


def _remember(key: tuple[str, str, int], features: list[torch.Tensor]) -> None:
    """Keep ``features``, dropping the oldest entries beyond the cache's size."""
    _FEATURE_CACHE[key] = features

    def size(entry: list[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in entry)

    while len(_FEATURE_CACHE) > 1 and sum(size(v) for v in _FEATURE_CACHE.values()) > _FEATURE_CACHE_BYTES:
        _FEATURE_CACHE.pop(next(iter(_FEATURE_CACHE)))
