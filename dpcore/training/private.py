"""The Opacus wiring: the per-sample-gradient module and DP optimiser, and one clipped, noised step over a
logical batch run in physical chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dpcore.models import (
    quiet_checkpointing_deprecation,
)
from dpcore.training.data import per_example_loss


class PerExampleLoss(nn.Module):
    """The criterion handed to Opacus's ghost clipping: the per-example loss vector ``[B]``.

    Opacus's ``DPLossFastGradientClipping`` sets ``reduction`` to ``"none"`` while it asks for the
    per-example loss; this loss is per-example whatever ``reduction`` says.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_example_loss(logits, targets)


@dataclass
class PrivateParts:
    """What Opacus adds: the per-sample-gradient module, the DP optimizer, ghost clipping's loss wrapper."""

    module: nn.Module
    optimizer: Any
    grad_sample_mode: str
    criterion: Any = None


def is_albert(model: nn.Module) -> bool:
    inner = model
    config = getattr(getattr(inner, "backbone", None), "config", None)
    return getattr(config, "model_type", None) == "albert"


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    grad_sample_mode: str,
    distributed: bool = False,
) -> PrivateParts:
    """Wrap ``model`` and ``optimizer`` for DP-SGD with Opacus (flat clipping, ``mean`` reduction).

    Sampling stays with the caller (Poisson, see :func:`poisson_indices`); ``expected_batch_size`` is the
    expected logical batch per process. ALBERT shares one layer across depth: per-sample gradients by hooks
    add up its uses correctly, but ghost clipping's per-layer norms would not, so that pair is refused.
    """
    from opacus.grad_sample.utils import prepare_module
    from opacus.optimizers import get_optimizer_class
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
    from opacus.validators import ModuleValidator

    if grad_sample_mode not in ("hooks", "ghost"):
        raise ValueError(f"grad_sample_mode must be 'hooks' or 'ghost', got {grad_sample_mode!r}")
    if grad_sample_mode == "ghost" and is_albert(model):
        raise ValueError(
            "ALBERT shares its layer weights across depth; ghost clipping computes per-layer norms that are "
            "wrong for shared layers. Use grad_sample_mode='hooks' for ALBERT."
        )
    model.train()  # Opacus must see the training graph (from_pretrained returns eval mode)
    with quiet_checkpointing_deprecation():
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(f"the model cannot train under DP-SGD: {errors}")
        if distributed:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            model = DPDDP(model)
        kwargs: dict[str, Any] = {"max_grad_norm": max_grad_norm} if grad_sample_mode == "ghost" else {}
        module = prepare_module(
            model, grad_sample_mode=grad_sample_mode, batch_first=True, loss_reduction="mean", **kwargs
        )
    optim_class = get_optimizer_class(
        clipping="flat", distributed=distributed, grad_sample_mode=grad_sample_mode
    )
    dp_optimizer = optim_class(
        optimizer=optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
    )
    criterion = None
    if grad_sample_mode == "ghost":
        criterion = DPLossFastGradientClipping(module, dp_optimizer, PerExampleLoss("mean"), "mean")
    return PrivateParts(module, dp_optimizer, grad_sample_mode, criterion)


def train_step(
    model: nn.Module,
    optimizer: Any,
    chunks: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    logical_size: int,
    private: PrivateParts | None = None,
    distributed: bool = False,
) -> list[torch.Tensor]:
    """One optimisation step over a logical batch given as physical ``chunks`` (ids, mask, targets).

    Non-private: gradients of the batch mean accumulate over the chunks, then one step. Private: every chunk
    is clipped per example and summed (Opacus's skip-step accumulation, as in its BatchMemoryManager), and
    the last one adds noise once and steps, so a logical batch is one clipped, noised step whatever its
    chunking. An empty (Poisson) batch is still a noised step. Returns the per-example losses.
    """
    losses: list[torch.Tensor] = []
    if private is None:
        for ids, mask, targets in chunks:
            loss_vec = per_example_loss(model(ids, mask), targets)
            (loss_vec.sum() / max(1, logical_size)).backward()
            losses.append(loss_vec.detach())
        if distributed:
            from opacus.distributed import average_gradients

            for p in model.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
            average_gradients(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses
    if not chunks:
        # Nothing sampled: clipping adds nothing, but the noise (and the accountant's step) still happen.
        for p in optimizer.params:
            if private.grad_sample_mode == "ghost":
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = p.new_zeros((0, *p.shape))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses
    for k, (ids, mask, targets) in enumerate(chunks):
        logits = model(ids, mask)
        if private.criterion is not None:
            loss = private.criterion(logits, targets)
            loss.backward()
            losses.append(loss.loss_per_sample.detach())
        else:
            loss_vec = per_example_loss(logits, targets)
            loss_vec.mean().backward()
            losses.append(loss_vec.detach())
        if k < len(chunks) - 1:
            optimizer.signal_skip_step(do_skip=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses
