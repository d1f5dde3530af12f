"""The epochs of one run: logical batches, physical chunks, steps, per-epoch records and checkpoints."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dpcore.config import RunConfig
from dpcore.privacy import epsilons
from dpcore.training.checkpoints import Progress
from dpcore.training.data import EncodedReports, poisson_indices
from dpcore.training.engine import Engine
from dpcore.training.evaluation import predict_reports
from dpcore.training.private import train_step
from dpcore.training.result import EpochRecord
from dpcore.training.units import PrivacyUnits


class TrainingInterrupted(RuntimeError):
    """Raised by ``train(..., stop_after_steps=k)`` after the checkpoint of step k (a simulated kill)."""


@dataclass
class Loop:
    """The epochs of one run: logical batches, physical chunks, steps, per-epoch records, checkpoints."""

    cfg: RunConfig
    engine: Engine
    train_set: EncodedReports
    validation: EncodedReports
    collate: Any
    device: torch.device
    sampler: torch.Generator
    units: PrivacyUnits
    shard: torch.Tensor  # this process's units
    steps_per_epoch: int
    epochs: int
    sample_rate: float
    world: int
    save: Any  # (progress, seconds) -> None
    progress_bar: bool
    precision: str = "float32"  # the forward pass's arithmetic (dpcore.training.precision)

    @property
    def poisson(self) -> bool:
        return self.engine.private is not None and self.cfg.privacy.poisson_sampling

    def batches(self, prog: Progress):
        """The epoch's logical batches from ``prog.step_in_epoch`` on, as tensors of unit indices."""
        for k in range(prog.step_in_epoch, self.steps_per_epoch):
            if self.poisson:
                yield self.shard[poisson_indices(len(self.shard), self.sample_rate, self.sampler)]
            else:
                assert prog.permutation is not None
                yield prog.permutation.tensor_split(self.steps_per_epoch)[k]

    def run(
        self,
        prog: Progress,
        *,
        checkpoint_every: int | None,
        stop_after_steps: int | None,
        folder: Path | None,
    ) -> tuple[str, float]:
        """Train from ``prog`` to the end (or the privacy budget); returns (stop reason, training seconds)."""
        engine, privacy = self.engine, self.engine.privacy
        lengths = torch.tensor([len(x) for x in self.train_set.input_ids])
        physical = self.cfg.train.resolved_physical_batch_size
        stop_reason = "completed"
        t_train = time.perf_counter()

        def seconds() -> float:
            return prog.seconds_before + time.perf_counter() - t_train

        for epoch in range(prog.epoch, self.epochs + 1):
            prog.epoch = epoch
            t_epoch = time.perf_counter()
            engine.model.train()
            if not self.poisson and prog.permutation is None:
                prog.permutation = self.shard[torch.randperm(len(self.shard), generator=self.sampler)]
            bar = tqdm(
                self.batches(prog),
                total=self.steps_per_epoch,
                initial=prog.step_in_epoch,
                desc=f"{self.cfg.train.mode} epoch {epoch}",
                disable=not self.progress_bar,
                mininterval=5,
            )
            for indices in bar:
                if prog.step >= engine.allowed_steps:
                    stop_reason = f"privacy budget spent: epsilon {privacy.max_epsilon:g} reached after {prog.step} steps"
                    break
                chunks = [
                    self._chunk(reports, group)
                    for reports, group in self.units.chunks(indices, lengths, physical)
                ]
                if engine.private is not None and not self.poisson:
                    engine.optimizer.expected_batch_size = max(1, len(indices))
                losses = train_step(
                    engine.model,
                    engine.optimizer,
                    chunks,
                    logical_size=sum(len(c[0]) for c in chunks),
                    private=engine.private,
                    distributed=self.world > 1,
                    precision=self.precision,
                )
                prog.loss_sum += float(sum(float(x.sum()) for x in losses))
                prog.loss_count += sum(len(x) for x in losses)
                engine.scheduler.step()
                prog.step += 1
                prog.step_in_epoch += 1
                if (
                    checkpoint_every
                    and prog.step % checkpoint_every == 0
                    and prog.step_in_epoch < self.steps_per_epoch
                ):
                    self.save(prog, seconds())
                if stop_after_steps is not None and prog.step >= stop_after_steps:
                    self.save(prog, seconds())
                    raise TrainingInterrupted(
                        f"stopped after step {prog.step} as asked; resume from {folder}"
                    )
            prog.records.append(self._record(prog, epoch, time.perf_counter() - t_epoch))
            prog.loss_sum, prog.loss_count, prog.permutation, prog.step_in_epoch = 0.0, 0, None, 0
            if stop_reason != "completed":
                break
            prog.epoch = epoch + 1
            self.save(prog, seconds())
        return stop_reason, seconds()

    def _chunk(self, reports: torch.Tensor, group: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """One physical chunk on the device: ids, mask, targets, and the unit of each report (patients)."""
        batch = self.collate([self.train_set[i] for i in reports.tolist()])
        return tuple(t.to(self.device) for t in (*batch, *([group] if group is not None else [])))

    def _record(self, prog: Progress, epoch: int, loop_seconds: float) -> EpochRecord:
        """The epoch's losses, time and epsilon spent so far (both accountants)."""
        t0 = time.perf_counter()
        train_loss = prog.loss_sum / prog.loss_count if prog.loss_count else math.nan
        _, val_loss = predict_reports(self.engine.inner, self.validation, self.collate, self.device)
        record = EpochRecord(epoch, train_loss, val_loss, prog.step, loop_seconds + time.perf_counter() - t0)
        record.train_seconds = loop_seconds
        privacy = self.engine.privacy
        if privacy is not None and privacy.poisson_sampling:
            eps = epsilons(
                history=[(privacy.noise_multiplier, privacy.sample_rate, prog.step)], delta=privacy.delta
            )
            record.epsilon_rdp, record.epsilon_prv = eps["rdp"], eps["prv"]
        return record
