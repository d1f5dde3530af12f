"""Checkpoints: the state a killed run resumes from (weights, optimiser, schedule, sampler and RNG states)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dpcore.config import RunConfig
from dpcore.training.engine import Engine
from dpcore.training.result import EpochRecord

CHECKPOINT_STATE = "state.pt"


def save_checkpoint(folder: Path, state: dict[str, Any], model: nn.Module, *, rank: int = 0) -> None:
    """Write ``state`` (trainable weights, optimizer, schedule, accountant history, sampler and RNG
    states) atomically; LoRA adapters also go through PEFT's ``save_pretrained`` (rank 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = CHECKPOINT_STATE if rank == 0 else f"state-rank{rank}.pt"
    tmp = folder / (name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / name)
    backbone = getattr(model, "backbone", None)
    if rank == 0 and hasattr(backbone, "peft_config"):
        backbone.save_pretrained(folder / "adapter")
        torch.save(model.head.state_dict(), folder / "head.pt")


def load_checkpoint(folder: Path, *, rank: int = 0) -> dict[str, Any] | None:
    path = folder / (CHECKPOINT_STATE if rank == 0 else f"state-rank{rank}.pt")
    return torch.load(path, weights_only=False) if path.is_file() else None


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@dataclass
class Progress:
    """Where the loop stands: everything a checkpoint must restore besides weights and optimiser."""

    step: int = 0
    epoch: int = 1
    step_in_epoch: int = 0
    records: list[EpochRecord] = field(default_factory=list)
    epoch_losses: list[torch.Tensor] = field(default_factory=list)
    permutation: torch.Tensor | None = None
    seconds_before: float = 0.0  # training seconds of earlier processes (a resumed run)


def save_progress(
    folder: Path | None,
    cfg: RunConfig,
    engine: Engine,
    sampler: torch.Generator,
    prog: Progress,
    seconds: float,
    *,
    rank: int,
) -> None:
    if folder is None:
        return
    privacy = engine.privacy
    state = {
        "config_hash": cfg.config_hash(),
        "weights": {
            n: q.detach().cpu().clone() for n, q in engine.inner.named_parameters() if q.requires_grad
        },
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict(),
        "sampler": sampler.get_state(),
        "rng": _rng_state(),
        "step": prog.step,
        "epoch": prog.epoch,
        "step_in_epoch": prog.step_in_epoch,
        "records": [dataclasses.asdict(r) for r in prog.records],
        "epoch_losses": prog.epoch_losses,
        "permutation": prog.permutation,
        "history": [(privacy.noise_multiplier, privacy.sample_rate, prog.step)] if privacy else [],
        "train_seconds": seconds,
    }
    save_checkpoint(folder, state, engine.inner, rank=rank)


def restore_progress(
    folder: Path | None, cfg: RunConfig, engine: Engine, sampler: torch.Generator, *, rank: int
) -> Progress:
    """The saved progress in ``folder`` (weights, optimiser, sampler and RNG restored), or a fresh start."""
    if folder is None or (state := load_checkpoint(folder, rank=rank)) is None:
        return Progress()
    if state["config_hash"] != cfg.config_hash():
        raise ValueError(
            f"checkpoint in {folder} belongs to configuration {state['config_hash']}, not "
            f"{cfg.config_hash()}; use another checkpoint_dir"
        )
    with torch.no_grad():
        params = dict(engine.inner.named_parameters())
        for name, value in state["weights"].items():
            params[name].copy_(value)
    engine.optimizer.load_state_dict(state["optimizer"])
    engine.scheduler.load_state_dict(state["scheduler"])
    sampler.set_state(state["sampler"])
    _set_rng_state(state["rng"])
    return Progress(
        step=state["step"],
        epoch=state["epoch"],
        step_in_epoch=state["step_in_epoch"],
        records=[EpochRecord(**r) for r in state["records"]],
        epoch_losses=list(state["epoch_losses"]),
        permutation=state["permutation"],
        seconds_before=state["train_seconds"],
    )
