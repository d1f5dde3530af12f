"""Reports as model inputs: token ids and binary targets, padding, Poisson batches and length-sorted chunks,
and the per-example loss that is the contract with Opacus."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dpcore.config import RunConfig
from dpcore.labels import binarize

IGNORE = -1.0  # target value of a label left out of the loss (the "ignore" uncertainty policy)


class EncodedReports(Dataset):
    """Model inputs and binary targets; items are ``(inputs, targets)`` tensors (Opacus wants tuples).

    The inputs of a report are its token ids ``[L]``, or, for a model whose lower layers are frozen, their
    output ``[L, hidden]`` (see :func:`frozen_features`).
    """

    def __init__(self, input_ids: Sequence[Sequence[int]] | Sequence[torch.Tensor], targets: np.ndarray):
        if len(input_ids) != len(targets):
            raise ValueError(f"{len(input_ids)} token sequences but {len(targets)} target rows")
        self.input_ids = [
            ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.long) for ids in input_ids
        ]
        self.targets = torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[i], self.targets[i]


def targets_from_labels(rows: Sequence[Sequence[int | None]], *, policy: str) -> np.ndarray:
    """Binary targets ``[n, n_labels]`` from CheXpert-scheme vectors; masked entries are ``IGNORE``.

    >>> targets_from_labels([[1, -1, None]], policy="ignore").tolist()
    [[1.0, -1.0, 0.0]]
    """
    out = []
    for row in rows:
        values, mask = binarize(row, policy=policy)  # type: ignore[arg-type]
        out.append([v if m else IGNORE for v, m in zip(values, mask, strict=True)])
    return np.asarray(out, dtype=np.float32).reshape(len(out), -1)


def encode(
    ds: datasets.Dataset, *, tokenizer: Any, text_column: str, label_column: str, policy: str, max_length: int
) -> EncodedReports:
    """Tokenize ``text_column`` (truncated, unpadded) and binarize ``label_column``."""
    ids = tokenizer(list(ds[text_column]), truncation=True, max_length=max_length)["input_ids"]
    return EncodedReports(ids, targets_from_labels(ds[label_column], policy=policy))


def encode_splits(
    cfg: RunConfig, splits: datasets.DatasetDict, tokenizer: Any, label_column: str
) -> dict[str, EncodedReports]:
    return {
        name: encode(
            splits[name],
            tokenizer=tokenizer,
            text_column=cfg.data.text_column,
            label_column=label_column,
            policy=cfg.teacher.uncertainty_policy,
            max_length=cfg.model.max_length,
        )
        for name in ("train", "validation", "test")
    }


def pad_collate(pad_id: int):
    """A collate function that pads each batch to its own longest report (dynamic padding); token ids pad
    with ``pad_id``, frozen-layer features with zeros (masked out either way)."""

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        pad = 0.0 if batch[0][0].is_floating_point() else pad_id
        ids = nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True, padding_value=pad)
        lengths = torch.tensor([len(b[0]) for b in batch])
        mask = (torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()
        return ids, mask, torch.stack([b[1] for b in batch])

    return collate


def per_example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits averaged over the labels that count: a vector of shape ``[B]``.

    >>> per_example_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, IGNORE], [0.0, 0.0, 0.0]])).shape
    torch.Size([2])
    """
    mask = (targets != IGNORE).to(logits.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), reduction="none")
    return (bce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def poisson_indices(n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson sample: every one of ``n`` examples independently with ``sample_rate``.

    >>> g = torch.Generator().manual_seed(0)
    >>> poisson_indices(5, 1.0, g).tolist()
    [0, 1, 2, 3, 4]
    """
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten()


def length_sorted_chunks(indices: torch.Tensor, lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``indices`` sorted by length and cut into as few chunks of at most ``size`` as possible, of near
    equal sizes (physical batches).

    Each chunk pads only to its own longest report, so a logical batch costs about its real tokens. Equal
    sizes matter under Poisson sampling: a batch of 70 at ``size`` 64 runs as 35 + 35, not 64 + 6.

    >>> [c.tolist() for c in length_sorted_chunks(torch.tensor([0, 1, 2]), torch.tensor([5, 1, 3]), 2)]
    [[1, 2], [0]]
    """
    if len(indices) == 0:
        return []
    order = torch.argsort(lengths[indices], stable=True)
    return list(indices[order].tensor_split(math.ceil(len(indices) / size)))
