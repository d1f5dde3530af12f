"""The model, optimiser and schedule as the loop drives them; under DP the noise from the target epsilon and
the steps the budget allows. Seeds, devices and the process group of ``torchrun``."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from torch import nn

from dpcore.config import RunConfig
from dpcore.privacy import check_delta, default_delta, epsilon_spent, noise_for_epsilon
from dpcore.training.private import PrivateParts, make_private
from dpcore.training.result import PrivacyReport


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group that ``torchrun`` describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1

    if device.type == "cuda" and device.index is None:
        # One GPU per process: "cuda" then means this process's own device (torchrun sets LOCAL_RANK).
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    schedule = cfg.train.resolved()
    groups = [
        {"params": body, "lr": schedule.learning_rate},
        {"params": head, "lr": schedule.head_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.train.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Engine:
    """The model and optimiser as the loop drives them (wrapped by Opacus or DDP when asked)."""

    inner: nn.Module  # the plain classifier: weights to save, evaluate and return
    model: nn.Module  # what the loop calls (the Opacus or DDP wrapper, or ``inner``)
    optimizer: Any
    scheduler: Any
    private: PrivateParts | None
    privacy: PrivacyReport | None
    allowed_steps: int


def allowed_steps(
    history_step: tuple[float, float], budget: float, delta: float, accountant: str, total: int
) -> int:
    """The most steps of ``(sigma, q)`` whose epsilon stays within ``budget`` (at most ``total``)."""

    sigma, q = history_step

    def eps(k: int) -> float:
        return epsilon_spent(history=[(sigma, q, k)], delta=delta, accountant=accountant)

    if eps(total) <= budget:
        return total
    lo, hi = 0, total  # eps(lo) <= budget < eps(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if eps(mid) <= budget else (lo, mid)
    return lo


def random_sources(
    *, seed: int, rank: int, secure: bool, noise_device: torch.device | str = "cpu"
) -> dict[str, torch.Generator]:
    """The generators of the Poisson sampler and of the DP noise.

    The sampler draws index sets on the CPU, where the reports are; the noise generator lives on
    ``noise_device``, the trainable parameters' device, because Opacus draws the noise there with it (a CPU
    generator cannot draw a CUDA tensor).

    Seeded from ``seed`` (a reproducible research run: whoever holds the seed, which the result publishes,
    can replay which reports each step drew and the noise itself), or, ``secure``, from the operating
    system's entropy, which nobody can replay. torch's generator is a Mersenne Twister, not a cryptographic
    generator: an unpredictable seed is what this offers (Opacus's CSPRNG needs ``torchcsprng``, which has no
    build for current torch).
    """
    if secure:
        seeds = [int.from_bytes(os.urandom(8), "little") >> 1 for _ in range(2)]
    else:
        seeds = [seed * 1_000_003 + rank, seed * 1_000_003 + rank + 500_009]
    return {
        "sampler": torch.Generator(device="cpu").manual_seed(seeds[0]),
        "noise": torch.Generator(device=torch.device(noise_device)).manual_seed(seeds[1]),
    }


def build_engine(
    cfg: RunConfig,
    model: nn.Module,
    *,
    units: int,
    sample_rate: float,
    total_steps: int,
    world: int,
    noise_generator: torch.Generator | None = None,
    secure: bool = False,
    example_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Engine:
    """Optimiser and schedule; under DP the noise (from the target epsilon), Opacus's wrappers and the
    number of steps the budget allows. ``units`` is the number of units of privacy (reports or patients)
    in the training split: delta, the expected batch and the accountant count them."""
    optimizer: Any = build_optimizer(model, cfg)
    scheduler = build_schedule(optimizer, total_steps=total_steps, warmup_ratio=cfg.train.warmup_ratio)
    engine = Engine(model, model, optimizer, scheduler, None, None, total_steps)
    if not cfg.is_private:
        if world > 1:
            engine.model = DPDDP(model)  # only broadcasts the weights; gradients are averaged in train_step
        return engine
    p = cfg.privacy
    delta = check_delta(p.delta if p.delta is not None else default_delta(units), units)
    sigma = p.noise_multiplier
    if sigma is None:
        sigma = noise_for_epsilon(
            target_epsilon=p.epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=total_steps,
            accountant=p.accountant,
        )
    gs_mode = p.resolved_grad_sample_mode(cfg.train.mode)
    engine.private = make_private(
        model,
        optimizer,
        noise_multiplier=sigma,
        max_grad_norm=p.max_grad_norm,
        expected_batch_size=sample_rate * units / world,
        grad_sample_mode=gs_mode,
        distributed=world > 1,
        example_inputs=example_inputs,
        noise_generator=noise_generator,
        secure_mode=secure,
    )
    engine.model, engine.optimizer = engine.private.module, engine.private.optimizer
    budget = p.max_epsilon if p.max_epsilon is not None else p.epsilon
    if budget is not None:  # the configuration guarantees Poisson sampling and noise here
        engine.allowed_steps = allowed_steps((sigma, sample_rate), budget, delta, p.accountant, total_steps)
    engine.privacy = PrivacyReport(
        noise_multiplier=sigma,
        max_grad_norm=p.max_grad_norm,
        sample_rate=sample_rate,
        steps=0,
        delta=delta,
        accountant=p.accountant,
        target_epsilon=p.epsilon,
        epsilon_rdp=None,
        epsilon_prv=None,
        poisson_sampling=p.poisson_sampling,
        grad_sample_mode=gs_mode,
        max_epsilon=budget,
        unit=p.privacy_unit,
        units=units,
        secure_rng=secure,
    )
    return engine
