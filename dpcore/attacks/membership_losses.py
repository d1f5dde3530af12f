"""Per-example losses of a trained classifier on a split: the input of every membership attack and audit.

The loss is the training loss, :func:`dpcore.training.per_example_loss` (binary cross-entropy averaged over
the labels that count), against the labels the model learned (the teacher's, by default). For a model whose
lower layers are frozen, their output comes from the same per-process cache training uses
(:func:`dpcore.training.frozen_features`): several models of one encoder scoring the same reports compute it
once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import torch
from torch import nn

from dpcore.config import RunConfig
from dpcore.models import load_tokenizer, resolve_model_path
from dpcore.training import encode, frozen_features, pad_collate, per_example_loss


@torch.no_grad()
def example_losses(
    model: nn.Module,
    reports: datasets.Dataset,
    *,
    cfg: RunConfig,
    label_column: str = "teacher_labels",
    batch_size: int = 64,
) -> np.ndarray:
    """The loss of ``model`` on every report of ``reports`` (in order), tokenised as ``cfg`` trains.

    Reports run in length-sorted batches (little padding); the model is evaluated in eval mode (no
    dropout) and left in the mode it was in.
    """
    if len(reports) == 0:
        return np.zeros(0)
    tokenizer = load_tokenizer(cfg.model.model)
    data = encode(
        reports,
        tokenizer=tokenizer,
        text_column=cfg.data.text_column,
        label_column=label_column,
        policy=cfg.teacher.uncertainty_policy,
        max_length=cfg.model.max_length,
    )
    device = next(model.parameters()).device
    if getattr(model, "first_trainable", 0):
        data = frozen_features(model, data, device=device, key=resolve_model_path(cfg.model.model))
    collate = pad_collate(tokenizer.pad_token_id or 0)
    lengths = torch.tensor([len(x) for x in data.input_ids])
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(data))
    was_training = model.training
    model.eval()
    try:
        for chunk in order.split(batch_size):
            ids, mask, targets = collate([data[i] for i in chunk.tolist()])
            logits = model(ids.to(device), mask.to(device))
            out[chunk] = per_example_loss(logits, targets.to(device)).float().cpu()
    finally:
        model.train(was_training)
    return out.numpy().astype(float)


def splits_losses(
    model: nn.Module,
    splits: Mapping[str, datasets.Dataset],
    *,
    cfg: RunConfig,
    names: Sequence[str] = ("train", "test"),
    sample: int | None = None,
    seed: int = 0,
    label_column: str = "teacher_labels",
) -> dict[str, np.ndarray]:
    """Losses on each split of ``names`` (members: ``train``; non-members: ``test``), each on at most
    ``sample`` reports drawn without replacement with ``seed`` (None: all of them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        ds = splits[name]
        if sample is not None and sample < len(ds):
            ds = ds.select(np.sort(rng.choice(len(ds), size=sample, replace=False)))
        out[name] = example_losses(model, ds, cfg=cfg, label_column=label_column)
    return out
