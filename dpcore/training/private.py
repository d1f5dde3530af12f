"""The Opacus wiring: the per-sample-gradient module and DP optimiser, and one clipped, noised step over a
logical batch run in physical chunks."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from opacus.distributed import average_gradients
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import get_optimizer_class
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn

from dpcore.models import (
    quiet_checkpointing_deprecation,
)
from dpcore.training.data import per_example_loss
from dpcore.training.precision import autocast, float32_grad_samples


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


# PyTorch's warning when a full backward hook's module has no input that requires grad: here the lowest
# trained module (a LoRA adapter, or the first trained layer over frozen features) reads frozen activations.
# Its first sentence, exactly (the documentation link that follows has moved between PyTorch versions).
FROZEN_INPUT_HOOK_WARNING = (
    "Full backward hook is firing when gradients are computed with respect to module outputs since no inputs "
    "require gradients."
)


@contextmanager
def quiet_frozen_input_hooks() -> Iterator[None]:
    """Silence that one warning, by its exact text, around a DP backward pass.

    It is harmless: the warning says the hook's ``grad_input`` will be None. Opacus's per-sample-gradient
    hooks read only ``grad_output`` (the backprops) and the saved activations, never ``grad_input``, and
    frozen inputs need no gradient. Every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(FROZEN_INPUT_HOOK_WARNING), category=UserWarning)
        yield


@dataclass
class PrivateParts:
    """What Opacus adds: the per-sample-gradient module, the DP optimizer, ghost clipping's loss wrapper."""

    module: nn.Module
    optimizer: Any
    grad_sample_mode: str
    criterion: Any = None


def reused_parameters(
    model: nn.Module, example_inputs: tuple[torch.Tensor, torch.Tensor] | None
) -> list[str]:
    """Trainable parameters used more than once in one forward pass: tied (one tensor under several names)
    or owned by a module that ``example_inputs`` runs more than once (ALBERT's one layer at every depth).

    Per-sample gradients by hooks add up such uses correctly; ghost clipping's per-layer norms do not.
    """
    seen: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.requires_grad:
            seen.setdefault(id(param), []).append(name)
    reused = [names[0] for names in seen.values() if len(names) > 1]
    if example_inputs is None:
        return reused
    calls: dict[str, int] = {}
    owners = {
        name: module
        for name, module in model.named_modules()
        if any(p.requires_grad for p in module.parameters(recurse=False))
    }
    hooks = [
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, module in owners.items()
    ]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    reused += [
        f"{name}.{pname}" if name else pname
        for name, n in calls.items()
        if n > 1
        for pname, p in owners[name].named_parameters(recurse=False)
        if p.requires_grad
    ]
    return reused


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    grad_sample_mode: str,
    distributed: bool = False,
    example_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    noise_generator: torch.Generator | None = None,
    secure_mode: bool = False,
) -> PrivateParts:
    """Wrap ``model`` and ``optimizer`` for DP-SGD with Opacus (flat clipping, ``mean`` reduction).

    Sampling stays with the caller (Poisson, see :func:`poisson_indices`); ``expected_batch_size`` is the
    expected logical batch per process. Ghost clipping needs ``example_inputs`` (a small batch of model
    inputs): with them it checks that no trainable parameter is used twice in one forward pass (tied weights,
    ALBERT's shared layer), for which its per-layer norms would be wrong; hooks handle such reuse exactly.
    The noise is drawn from ``noise_generator`` (None: torch's global generator); ``secure_mode`` is Opacus's
    noise robust to floating-point attacks (Mironov's).
    """

    if grad_sample_mode not in ("hooks", "ghost"):
        raise ValueError(f"grad_sample_mode must be 'hooks' or 'ghost', got {grad_sample_mode!r}")
    if grad_sample_mode == "ghost":
        if example_inputs is None:
            raise ValueError("ghost clipping needs example_inputs to check that no parameter is used twice")
        reused = reused_parameters(model, example_inputs)
        if reused:
            raise ValueError(
                f"parameters used more than once in one forward pass ({', '.join(reused[:3])}"
                f"{', ...' if len(reused) > 3 else ''}): ghost clipping's per-layer norms are wrong for them; "
                "use grad_sample_mode='hooks'"
            )
    model.train()  # Opacus must see the training graph (from_pretrained returns eval mode)
    with quiet_checkpointing_deprecation():
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(f"the model cannot train under DP-SGD: {errors}")
        if distributed:
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
        generator=noise_generator,
        secure_mode=secure_mode,
    )
    criterion = None
    if grad_sample_mode == "ghost":
        criterion = DPLossFastGradientClipping(module, dp_optimizer, PerExampleLoss("mean"), "mean")
    return PrivateParts(module, dp_optimizer, grad_sample_mode, criterion)


def train_step(
    model: nn.Module,
    optimizer: Any,
    chunks: Sequence[tuple[torch.Tensor, ...]],
    *,
    logical_size: int,
    private: PrivateParts | None = None,
    distributed: bool = False,
    precision: str = "float32",
) -> list[torch.Tensor]:
    """One optimisation step over a logical batch given as physical ``chunks`` (ids, mask, targets[, group]).

    Non-private: gradients of the batch mean accumulate over the chunks, then one step. Private: every chunk
    is clipped per example and summed (Opacus's skip-step accumulation, as in its BatchMemoryManager), and
    the last one adds noise once and steps, so a logical batch is one clipped, noised step whatever its
    chunking. An empty (Poisson) batch is still a noised step. Returns the per-example losses.

    A chunk's optional fourth tensor ``group`` numbers the privacy unit of each report within the chunk (the
    patient unit): the per-sample gradients of a unit's reports are averaged into one before clipping, so a
    unit, however many reports it has, contributes at most C (hooks only).

    ``precision="bfloat16"`` runs the forward pass under autocast; the loss, the weights' gradients and (under
    DP) the per-sample gradients are float32 before anything is clipped or noised.
    """
    losses: list[torch.Tensor] = []
    if private is None:
        for ids, mask, targets, *_ in chunks:
            with autocast(precision, ids.device):
                loss_vec = per_example_loss(model(ids, mask), targets).float()
            (loss_vec.sum() / max(1, logical_size)).backward()
            losses.append(loss_vec.detach())
        if distributed:
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
    for k, (ids, mask, targets, *group) in enumerate(chunks):
        if group and private.criterion is not None:
            raise ValueError("privacy units of several reports need grad_sample_mode='hooks'")
        with autocast(precision, ids.device):
            logits = model(ids, mask)
        if private.criterion is not None:
            loss = private.criterion(logits, targets)
            with quiet_frozen_input_hooks():
                loss.backward()
            losses.append(loss.loss_per_sample.detach())
        else:
            loss_vec = per_example_loss(logits.float(), targets)
            with quiet_frozen_input_hooks():
                loss_vec.mean().backward()
            losses.append(loss_vec.detach())
            float32_grad_samples(optimizer.params)
            if group:
                _merge_units(optimizer.params, group[0])
        if k < len(chunks) - 1:
            optimizer.signal_skip_step(do_skip=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses


def _merge_units(params: Sequence[torch.Tensor], group: torch.Tensor) -> None:
    """Replace each parameter's per-report gradients ``[rows, ...]`` by per-unit means ``[units, ...]``."""
    units = int(group.max()) + 1
    counts = torch.bincount(group, minlength=units).clamp(min=1)
    for p in params:
        rows = torch.cat(p.grad_sample) if isinstance(p.grad_sample, list) else p.grad_sample
        merged = rows.new_zeros((units, *rows.shape[1:])).index_add_(0, group.to(rows.device), rows)
        p.grad_sample = merged / counts.to(rows.device).view(-1, *([1] * (rows.dim() - 1)))
