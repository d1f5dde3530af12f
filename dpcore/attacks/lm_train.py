"""Training the attack chapters' language models, without DP or with DP-SGD (Opacus).

:func:`train_lm` takes a per-example loss of shape ``[B]`` (:mod:`dpcore.attacks.lm`). Without DP it is plain
AdamW over shuffled batches of similar length; with DP it is Opacus's ``PrivacyEngine.make_private`` with
Poisson sampling, each example's gradient clipped, Gaussian noise calibrated to a target ε by
:func:`dpcore.privacy.noise_for_epsilon`, and ε reported by both accountants
(:func:`dpcore.privacy.epsilons`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dpcore.attacks.lm import PerExampleLoss, pad
from dpcore.models import quiet_checkpointing_deprecation
from dpcore.privacy import check_delta, default_delta, epsilons, noise_for_epsilon


class SimilarLengthBatches:
    """Shuffled batches of sequences of similar length, so that little compute goes to padding: each epoch,
    a random permutation is cut into pools of 16 batches, each pool sorted by length and cut into batches,
    and the batches shuffled.

    >>> g = torch.Generator().manual_seed(0)
    >>> sorted(sorted(b) for b in SimilarLengthBatches(torch.tensor([5, 1, 4, 2]), 2, g))
    [[0, 2], [1, 3]]
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator)
        pool = 16 * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)].tolist()
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


def length_chunks(lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Indices of a batch sorted by length and cut into as few near-equal chunks of at most ``size`` as
    possible: physical batches that pad little. One chunk, unsorted, when the batch fits.

    >>> [c.tolist() for c in length_chunks(torch.tensor([5, 1, 3, 2]), 2)]
    [[1, 3], [2, 0]]
    """
    n = len(lengths)
    if n <= size:
        return [torch.arange(n)] if n else []
    order = torch.argsort(lengths, stable=True)
    parts = math.ceil(n / size)
    return list(torch.tensor_split(order, parts))


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_lm` trains. With ``target_epsilon`` the run is DP-SGD (Poisson batches of expected
    size ``batch_size``, each example's gradient clipped to ``max_grad_norm``, Gaussian noise for the
    target)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    max_length: int = 160
    target_epsilon: float | None = None
    delta: float | None = None  # default: the largest power of ten at most 1/(10 N)
    max_grad_norm: float = 1.0
    physical_batch_size: int = 16  # a larger batch runs as length-sorted chunks (less padding), one step
    seed: int = 0

    @property
    def private(self) -> bool:
        return self.target_epsilon is not None


@dataclass
class TrainReport:
    """What a training run did: its steps, mean loss per epoch and, for DP runs, the privacy spent."""

    steps: int
    epoch_losses: list[float]
    seconds: float
    private: bool
    n: int
    poisson: bool = False
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0
    delta: float | None = None
    epsilon: dict[str, float] = field(default_factory=dict)  # accountant -> epsilon (RDP and PRV)
    loss_shape: tuple[int, ...] = ()  # shape of the per-example loss of the last batch
    batch_sizes: list[int] = field(default_factory=list)  # examples in each step (Poisson: they vary)


def train_lm(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    loss: PerExampleLoss,
    settings: TrainSettings,
    pad_id: int,
) -> TrainReport:
    """Train the parameters of ``model`` that require grad on ``sequences`` (token id lists), in place.

    ``loss`` returns one loss per sequence (shape ``[B]``); their mean is the batch loss. DP runs go through
    Opacus (``make_private``, Poisson sampling; the hooks are removed afterwards). The model is left in
    evaluation mode.
    """
    with warnings.catch_warnings():
        # Opacus warns that its noise comes from a fast, not a cryptographically secure, generator (fine for
        # experiments, not for a release) and that its backward hooks fire on outputs of frozen layers.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        report = TrainReport(
            steps=0, epoch_losses=[], seconds=0.0, private=settings.private, n=len(sequences)
        )
        torch.manual_seed(settings.seed)
        loader = _loader(sequences, settings, pad_id)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        engine, module = None, model
        if settings.private:
            engine, module, optimizer, loader = _make_private(model, optimizer, loader, settings, report)
        start = time.perf_counter()
        module.train()
        for _ in range(settings.epochs):
            report.epoch_losses.append(
                _epoch(module, optimizer, loader, loss, settings, report, params, engine)
            )
        report.seconds = time.perf_counter() - start
        if engine is not None:
            report.epsilon = epsilons(history=engine.accountant.history, delta=report.delta)
            module.remove_hooks()  # the trained model is evaluated and sampled without Opacus in the way
            for p in params:
                p.grad_sample = None
    model.eval()
    return report


def _loader(sequences: Sequence[Sequence[int]], settings: TrainSettings, pad_id: int) -> Any:

    ids, mask = pad(sequences, pad_id=pad_id, max_length=settings.max_length)
    generator = torch.Generator().manual_seed(settings.seed)
    data = TensorDataset(ids, mask)
    if settings.private:  # Opacus replaces the batches with Poisson samples of expected size batch_size
        return DataLoader(data, batch_size=settings.batch_size, shuffle=True, generator=generator)
    return DataLoader(data, batch_sampler=SimilarLengthBatches(mask.sum(1), settings.batch_size, generator))


def _make_private(
    model: nn.Module, optimizer: Any, loader: Any, settings: TrainSettings, report: TrainReport
):
    """Opacus's engine, module, optimizer and Poisson loader, the noise calibrated to the target ε."""

    n = report.n
    report.delta = check_delta(settings.delta if settings.delta is not None else default_delta(n), n)
    report.sample_rate = 1 / len(loader)  # what DPDataLoader samples with
    report.noise_multiplier = noise_for_epsilon(
        target_epsilon=settings.target_epsilon,
        delta=report.delta,
        sample_rate=report.sample_rate,
        steps=settings.epochs * len(loader),
    )
    engine = PrivacyEngine(accountant="rdp")
    with quiet_checkpointing_deprecation():
        module, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=report.noise_multiplier,
            max_grad_norm=settings.max_grad_norm,
            poisson_sampling=True,
        )
    report.poisson = isinstance(loader, DPDataLoader)
    return engine, module, optimizer, loader


def _epoch(module, optimizer, loader, loss, settings, report, params, engine) -> float:
    """One pass over ``loader``; the mean per-example loss of the batches as trained."""
    total, count = 0.0, 0
    for batch_ids, batch_mask in loader:
        if len(batch_ids) == 0:  # an empty Poisson batch is still a noised step (and an accountant step)
            for p in params:
                p.grad_sample = p.new_zeros((0, *p.shape))
        report.batch_sizes.append(len(batch_ids))
        chunks = length_chunks(batch_mask.sum(1), settings.physical_batch_size)
        for k, idx in enumerate(chunks):
            length = int(batch_mask[idx].sum(1).max())  # pad only to this chunk's longest sequence
            per_example = loss(module, batch_ids[idx, :length], batch_mask[idx, :length])
            report.loss_shape = tuple(per_example.shape)
            total, count = total + float(per_example.detach().sum()), count + len(per_example)
            if engine is None:  # plain gradient accumulation of the batch mean
                (per_example.sum() / len(batch_ids)).backward()
                continue
            per_example.mean().backward()  # Opacus scales per-sample gradients by this chunk's size
            if k < len(chunks) - 1:
                # Opacus's gradient accumulation: clip and sum this chunk, noise and step after the last.
                optimizer.signal_skip_step(do_skip=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        report.steps += 1
    return total / max(count, 1)
