"""Checkpoints: the state a killed run resumes from (weights, optimiser, schedule, sampler and RNG states).

A checkpoint holds the states of the Poisson sampler's and the noise's generators: whoever reads one can
recover which units every step drew and the noise it added, before the checkpoint and after it (a Mersenne
Twister's state runs backwards as well as forwards; a GPU generator's state is its seed and offset).
Checkpoints are therefore as secret as the training data: every file is written readable by its owner only
(mode 0o600, folders 0o700), and a released model never contains one.
"""

from __future__ import annotations

import dataclasses
import os
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
OWNER_FILE, OWNER_FOLDER = 0o600, 0o700


def save_checkpoint(folder: Path, state: dict[str, Any], model: nn.Module, *, rank: int = 0) -> None:
    """Write ``state`` (trainable weights, optimizer, schedule, accountant history, sampler and RNG
    states) atomically and readable by its owner only; LoRA adapters also go through PEFT's
    ``save_pretrained`` (rank 0)."""
    folder.mkdir(parents=True, exist_ok=True, mode=OWNER_FOLDER)
    name = CHECKPOINT_STATE if rank == 0 else f"state-rank{rank}.pt"
    tmp = folder / (name + ".tmp")
    # Created 0o600 (not chmod-ed after writing): the generators' states are never readable by others.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_FILE), "wb") as fh:
        os.fchmod(fh.fileno(), OWNER_FILE)  # a leftover .tmp keeps its old mode through O_CREAT
        torch.save(state, fh)
    tmp.replace(folder / name)
    backbone = getattr(model, "backbone", None)
    if rank == 0 and hasattr(backbone, "peft_config"):
        backbone.save_pretrained(folder / "adapter")
        torch.save(model.head.state_dict(), folder / "head.pt")
        owner_only(folder / "adapter")
        owner_only(folder / "head.pt")


def owner_only(path: Path) -> None:
    """``path`` (a file, or a folder and everything under it) readable and writable by its owner only."""
    if path.is_dir():
        path.chmod(OWNER_FOLDER)
        for child in path.rglob("*"):
            child.chmod(OWNER_FOLDER if child.is_dir() else OWNER_FILE)
    elif path.exists():
        path.chmod(OWNER_FILE)


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
    # The epoch's training loss as a running sum and count: a checkpoint keeps no per-example values.
    loss_sum: float = 0.0
    loss_count: int = 0
    permutation: torch.Tensor | None = None
    seconds_before: float = 0.0  # training seconds of earlier processes (a resumed run)


def accounting(engine: Engine, data_fingerprint: str) -> dict[str, Any]:
    """What the accountant's epsilon depends on besides the configuration: a resumed run must match it."""
    privacy = engine.privacy
    state: dict[str, Any] = {"data_fingerprint": data_fingerprint}
    if privacy is not None:
        state.update(
            unit=privacy.unit,
            units=privacy.units,
            sample_rate=privacy.sample_rate,
            noise_multiplier=privacy.noise_multiplier,
        )
    return state


def save_progress(
    folder: Path | None,
    cfg: RunConfig,
    engine: Engine,
    generators: dict[str, torch.Generator],
    prog: Progress,
    seconds: float,
    *,
    rank: int,
    data_fingerprint: str,
) -> None:
    if folder is None:
        return
    privacy = engine.privacy
    state = {
        "config_hash": cfg.config_hash(),
        "accounting": accounting(engine, data_fingerprint),
        "weights": {
            n: q.detach().cpu().clone() for n, q in engine.inner.named_parameters() if q.requires_grad
        },
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict(),
        "generators": {name: g.get_state() for name, g in generators.items()},
        "rng": _rng_state(),
        "step": prog.step,
        "epoch": prog.epoch,
        "step_in_epoch": prog.step_in_epoch,
        "records": [dataclasses.asdict(r) for r in prog.records],
        "loss_sum": prog.loss_sum,
        "loss_count": prog.loss_count,
        "permutation": prog.permutation,
        "history": [(privacy.noise_multiplier, privacy.sample_rate, prog.step)] if privacy else [],
        "train_seconds": seconds,
    }
    save_checkpoint(folder, state, engine.inner, rank=rank)


def restore_progress(
    folder: Path | None,
    cfg: RunConfig,
    engine: Engine,
    generators: dict[str, torch.Generator],
    *,
    rank: int,
    data_fingerprint: str,
) -> Progress:
    """The saved progress in ``folder`` (weights, optimiser, generators and RNG restored), or a fresh start.

    A checkpoint of another configuration, or of the same one over other data or another accounting (N,
    q, sigma, unit), is refused: resuming it would report an epsilon that does not hold.
    """
    if folder is None or (state := load_checkpoint(folder, rank=rank)) is None:
        return Progress()
    if state["config_hash"] != cfg.config_hash():
        raise ValueError(
            f"checkpoint in {folder} belongs to configuration {state['config_hash']}, not "
            f"{cfg.config_hash()}; use another checkpoint_dir"
        )
    now = accounting(engine, data_fingerprint)
    saved = state.get("accounting", {})
    changed = [key for key in now if saved.get(key) != now[key]]
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(
            f"checkpoint in {folder} was trained with other data or accounting ({what}); resuming would "
            "mix two runs under one epsilon: use another checkpoint_dir"
        )
    with torch.no_grad():
        params = dict(engine.inner.named_parameters())
        for name, value in state["weights"].items():
            params[name].copy_(value)
    engine.optimizer.load_state_dict(state["optimizer"])
    engine.scheduler.load_state_dict(state["scheduler"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    _set_rng_state(state["rng"])
    return Progress(
        step=state["step"],
        epoch=state["epoch"],
        step_in_epoch=state["step_in_epoch"],
        records=[EpochRecord(**r) for r in state["records"]],
        loss_sum=state["loss_sum"],
        loss_count=state["loss_count"],
        permutation=state["permutation"],
        seconds_before=state["train_seconds"],
    )
