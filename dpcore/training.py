"""The training loop for every mode, the Opacus wiring, and the typed result of a run.

The contract with Opacus is a *per-example* loss: binary cross-entropy averaged over the labels gives a
vector of shape ``[B]``; the loop reduces it with a mean (Opacus's ``loss_reduction="mean"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from dpcore import __version__
from dpcore.config import MODE_DEFAULTS, RunConfig
from dpcore.labels import binarize, get_label_set
from dpcore.metrics import evaluate
from dpcore.models import (
    build_model,
    load_tokenizer,
    parameter_counts,
    quiet_checkpointing_deprecation,
    resolve_model_path,
)
from dpcore.privacy import check_delta, default_delta, epsilons, noise_for_epsilon

IGNORE = -1.0  # target value of a label left out of the loss (the "ignore" uncertainty policy)


# -- data ---------------------------------------------------------------------------------------------
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


# Frozen-layer features by (weights, depth, token ids): the runs of a study that share a model and a corpus
# compute them once per process, and a deeper split starts from a shallower one's output (a truncated model
# keeps the first layers' weights, so the stand-ins of several sizes share them). Bounded by size.
_FEATURE_CACHE: dict[tuple[str, str, int], list[torch.Tensor]] = {}
_FEATURE_CACHE_BYTES = 6 * 2**30


def frozen_features(
    model: nn.Module, data: EncodedReports, *, device: torch.device, key: str, batch_size: int = 64
) -> EncodedReports:
    """``data`` with each report's token ids replaced by the output of ``model``'s frozen lower layers.

    Those layers never change in training, so their output is a fixed function of each report, computed
    once here (no privacy cost) instead of in every step. ``key`` names the weights (the model's path).
    Reports run in length-sorted batches.
    """
    ids_hash = hashlib.sha256(b"".join(x.numpy().tobytes() + b"|" for x in data.input_ids)).hexdigest()
    depth = model.first_trainable
    features = _FEATURE_CACHE.get((key, ids_hash, depth))
    if features is None:
        shallower = [d for (k, h, d) in _FEATURE_CACHE if (k, h) == (key, ids_hash) and d < depth]
        start = max(shallower, default=0)
        inputs = _FEATURE_CACHE[(key, ids_hash, start)] if start else data.input_ids
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
        hidden = model.frozen_features(batch.to(device), mask.to(device), start=start).cpu()
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


# -- loss ---------------------------------------------------------------------------------------------
def per_example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits averaged over the labels that count: a vector of shape ``[B]``.

    >>> per_example_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, IGNORE], [0.0, 0.0, 0.0]])).shape
    torch.Size([2])
    """
    mask = (targets != IGNORE).to(logits.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), reduction="none")
    return (bce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


# -- result -------------------------------------------------------------------------------------------
@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    steps: int
    seconds: float
    epsilon_rdp: float | None = None
    epsilon_prv: float | None = None
    # Seconds of the training loop alone (no validation): what the benchmark compares.
    train_seconds: float | None = None


@dataclass
class PrivacyReport:
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str
    target_epsilon: float | None
    epsilon_rdp: float | None
    epsilon_prv: float | None
    poisson_sampling: bool
    grad_sample_mode: str = "hooks"
    # The budget training stops at (the target epsilon, or max_epsilon), and why training stopped.
    max_epsilon: float | None = None
    stop_reason: str = "completed"


@dataclass
class RunResult:
    """Everything a run leaves behind, JSON on disk (see :mod:`dpcore.results`)."""

    config: dict[str, Any]
    config_hash: str
    label_names: list[str]
    epochs: list[EpochRecord]
    metrics: dict[str, Any]
    privacy: PrivacyReport | None
    data: dict[str, int]
    parameters: dict[str, int]
    timings: dict[str, float]
    peak_memory_mb: float
    versions: dict[str, str]
    code_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The trained model, when asked for (``train(..., keep_model=True)``); never serialised.
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def mode(self) -> str:
        return self.config["train"]["mode"]

    @property
    def weighted_f1(self) -> float:
        """Weighted F1 on the test split against the reference labels (the paper's metric)."""
        return self.metrics["test_vs_reference"]["f1"]["weighted"]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "model"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        data = dict(data)
        data["epochs"] = [EpochRecord(**e) for e in data["epochs"]]
        data["privacy"] = PrivacyReport(**data["privacy"]) if data["privacy"] else None
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)  # atomic: a crash never leaves half a result
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# -- the loop -----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def library_versions() -> dict[str, str]:
    import opacus
    import peft
    import transformers

    return {
        "dpcore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "opacus": opacus.__version__,
        "datasets": datasets.__version__,
    }


def _optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    schedule = cfg.train.resolved()
    groups = [
        {"params": body, "lr": schedule.learning_rate},
        {"params": head, "lr": schedule.head_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.train.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model: nn.Module, loader: Any, device: torch.device) -> tuple[np.ndarray, float]:
    """Probabilities ``[n, n_labels]`` and the mean per-example loss over ``loader``."""
    was_training = model.training
    model.eval()
    probs, losses = [], []
    for ids, mask, targets in loader:
        logits = model(ids.to(device), mask.to(device))
        losses.append(per_example_loss(logits, targets.to(device)).cpu())
        probs.append(torch.sigmoid(logits).cpu())
    model.train(was_training)
    if not probs:
        return np.zeros((0, 0)), math.nan
    return torch.cat(probs).numpy(), float(torch.cat(losses).mean())


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Process-wide peak resident set size (Linux reports kilobytes).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the engine: batches, Opacus wiring, one step ------------------------------------------------------
class TrainingInterrupted(RuntimeError):
    """Raised by ``train(..., stop_after_steps=k)`` after the checkpoint of step k (a simulated kill)."""


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


# -- checkpoints --------------------------------------------------------------------------------------
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


# -- distributed --------------------------------------------------------------------------------------
def _distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group that ``torchrun`` describes in the environment."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        # One GPU per process: "cuda" then means this process's own device (torchrun sets LOCAL_RANK).
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _allowed_steps(
    history_step: tuple[float, float], budget: float, delta: float, accountant: str, total: int
) -> int:
    """The most steps of ``(sigma, q)`` whose epsilon stays within ``budget`` (at most ``total``)."""
    from dpcore.privacy import epsilon_spent

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


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per-label thresholds that maximise F1 on ``(y_true, probs)`` (a grid from 0.05 to 0.95)."""
    grid = np.linspace(0.05, 0.95, 19)
    out = []
    for j in range(y_true.shape[1]):
        truth = y_true[:, j] > 0
        best, best_t = -1.0, 0.5
        for t in grid:
            pred = probs[:, j] >= t
            tp = float((pred & truth).sum())
            f1 = 2 * tp / max(1.0, float(pred.sum() + truth.sum()))
            if f1 > best:
                best, best_t = f1, float(t)
        out.append(best_t)
    return out


# -- the loop -----------------------------------------------------------------------------------------
@dataclass
class _Engine:
    """The model and optimiser as the loop drives them (wrapped by Opacus or DDP when asked)."""

    inner: nn.Module  # the plain classifier: weights to save, evaluate and return
    model: nn.Module  # what the loop calls (the Opacus or DDP wrapper, or ``inner``)
    optimizer: Any
    scheduler: Any
    private: PrivateParts | None
    privacy: PrivacyReport | None
    allowed_steps: int


@dataclass
class _Progress:
    """Where the loop stands: everything a checkpoint must restore besides weights and optimiser."""

    step: int = 0
    epoch: int = 1
    step_in_epoch: int = 0
    records: list[EpochRecord] = field(default_factory=list)
    epoch_losses: list[torch.Tensor] = field(default_factory=list)
    permutation: torch.Tensor | None = None
    seconds_before: float = 0.0  # training seconds of earlier processes (a resumed run)


def _encode_splits(
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


def _build_engine(
    cfg: RunConfig, model: nn.Module, *, n_train: int, sample_rate: float, total_steps: int, world: int
) -> _Engine:
    """Optimiser and schedule; under DP the noise (from the target epsilon), Opacus's wrappers and the
    number of steps the budget allows."""
    optimizer: Any = _optimizer(model, cfg)
    scheduler = _schedule(optimizer, total_steps=total_steps, warmup_ratio=cfg.train.warmup_ratio)
    engine = _Engine(model, model, optimizer, scheduler, None, None, total_steps)
    if not cfg.is_private:
        if world > 1:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            engine.model = DPDDP(model)  # only broadcasts the weights; gradients are averaged in train_step
        return engine
    p = cfg.privacy
    delta = check_delta(p.delta if p.delta is not None else default_delta(n_train), n_train)
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
        expected_batch_size=sample_rate * n_train / world,
        grad_sample_mode=gs_mode,
        distributed=world > 1,
    )
    engine.model, engine.optimizer = engine.private.module, engine.private.optimizer
    budget = p.max_epsilon if p.max_epsilon is not None else p.epsilon
    if budget is not None and p.poisson_sampling and sigma > 0:
        engine.allowed_steps = _allowed_steps((sigma, sample_rate), budget, delta, p.accountant, total_steps)
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
    )
    return engine


def _save_progress(
    folder: Path | None,
    cfg: RunConfig,
    engine: _Engine,
    sampler: torch.Generator,
    prog: _Progress,
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


def _restore_progress(
    folder: Path | None, cfg: RunConfig, engine: _Engine, sampler: torch.Generator, *, rank: int
) -> _Progress:
    """The saved progress in ``folder`` (weights, optimiser, sampler and RNG restored), or a fresh start."""
    if folder is None or (state := load_checkpoint(folder, rank=rank)) is None:
        return _Progress()
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
    return _Progress(
        step=state["step"],
        epoch=state["epoch"],
        step_in_epoch=state["step_in_epoch"],
        records=[EpochRecord(**r) for r in state["records"]],
        epoch_losses=list(state["epoch_losses"]),
        permutation=state["permutation"],
        seconds_before=state["train_seconds"],
    )


def _evaluate(
    cfg: RunConfig,
    inner: nn.Module,
    enc: dict[str, EncodedReports],
    splits: datasets.DatasetDict,
    collate: Any,
    device: torch.device,
    *,
    label_column: str,
    reference_column: str,
    label_names: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics against the reference and the teacher, and what the thresholds were (with a warning
    when they were tuned on private validation data)."""
    policy = cfg.teacher.uncertainty_policy
    eval_policy = "u-ones" if policy == "ignore" else policy
    threshold: float | list[float] = cfg.train.threshold
    extra: dict[str, Any] = {}
    if cfg.train.threshold_policy == "validation":
        val_probs, _ = _predict(inner, enc["validation"], collate, device)
        val_truth = targets_from_labels(splits["validation"][label_column], policy=eval_policy)
        threshold = tune_thresholds(val_truth, val_probs)
        extra["thresholds"] = threshold
        if cfg.is_private:
            extra["privacy_warning"] = (
                "per-label thresholds were tuned on the validation split without privacy: they are a "
                "release of private data that the reported epsilon does not cover"
            )
    probs, _ = _predict(inner, enc["test"], collate, device)
    test = splits["test"]
    reference = targets_from_labels(test[reference_column], policy=eval_policy)
    teacher = targets_from_labels(test[label_column], policy=eval_policy)
    metrics = {
        "test_vs_reference": evaluate(reference, probs, label_names=label_names, threshold=threshold),
        "test_vs_teacher": evaluate(teacher, probs, label_names=label_names, threshold=threshold),
    }
    return metrics, extra


def train(
    cfg: RunConfig,
    splits: datasets.DatasetDict,
    *,
    label_column: str = "teacher_labels",
    reference_column: str = "labels",
    progress: bool = True,
    keep_model: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    stop_after_steps: int | None = None,
) -> RunResult:
    """Train one configuration on ``splits`` (``train``/``validation``/``test``) and evaluate it.

    The model learns ``label_column`` (the teacher's labels); validation loss is measured on the same kind
    of labels (all a real user has); test metrics are computed against both ``reference_column`` (ground
    truth, or the data set's shipped labels) and the teacher.

    Every step draws a logical batch (Poisson with rate ``1 / ceil(N / batch_size)`` under DP, a shuffled
    slice of the epoch otherwise), sorts it by length and runs it in physical chunks of ``physical_batch_size``.
    With ``checkpoint_dir``, the state is saved at the end of every epoch (and every ``checkpoint_every``
    steps), and a run that finds a checkpoint of the same configuration there resumes from it.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains on its shard with Opacus's DP data
    parallelism: the same sample rate and steps, so the same epsilon as one process.
    """
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    rank, world = _distributed_context(device)
    label_names = list(get_label_set(cfg.teacher.label_set).labels)
    schedule = cfg.train.resolved()
    tokenizer = load_tokenizer(cfg.model.model)
    enc = _encode_splits(cfg, splits, tokenizer, label_column)
    collate = pad_collate(tokenizer.pad_token_id or 0)
    n_train = len(enc["train"])
    if n_train == 0:
        raise ValueError("the training split is empty")
    if cfg.is_private and schedule.batch_size > n_train:
        raise ValueError(
            f"batch_size {schedule.batch_size} is larger than the {n_train} training reports: a Poisson "
            f"sample rate above 1 has no privacy meaning; set batch_size to at most {n_train} "
            "(DP needs large batches, so prefer more reports)"
        )
    steps_per_epoch = math.ceil(n_train / schedule.batch_size)
    # Opacus's DPDataLoader convention: q = 1 / steps, so an epoch sees N reports in expectation, as a
    # non-private epoch does (q = B / N would see B * ceil(N / B) of them: more, whenever B does not divide N).
    sample_rate = 1 / steps_per_epoch
    model = build_model(cfg.model, num_labels=len(label_names), mode=cfg.train.mode).to(device)
    if model.first_trainable:
        t_features = time.perf_counter()
        key = resolve_model_path(cfg.model.model)
        enc = {name: frozen_features(model, e, device=device, key=key) for name, e in enc.items()}
        feature_seconds = time.perf_counter() - t_features
    else:
        feature_seconds = 0.0
    start: dict[str, Any] = {}
    if cfg.train.warm_start:
        from dpcore.warm_start import load_weights, warm_start

        t_warm = time.perf_counter()
        public = warm_start(cfg)
        load_weights(model, public.weights)
        # What the public model alone scores on this run's test split: the reference a private fine-tuning
        # must beat to have learned anything from the private data.
        public_metrics, _ = _evaluate(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threshold_policy="fixed")),
            model,
            enc,
            splits,
            pad_collate(tokenizer.pad_token_id or 0),
            device,
            label_column=label_column,
            reference_column=reference_column,
            label_names=label_names,
        )
        start = {
            "corpus": cfg.train.warm_start,
            "reports": public.reports,
            "config_hash": public.config_hash,
            "public_test_weighted_f1": public.public_weighted_f1,
            "test_vs_reference": public_metrics["test_vs_reference"],
            "seconds": time.perf_counter() - t_warm,
        }
    engine = _build_engine(
        cfg,
        model,
        n_train=n_train,
        sample_rate=sample_rate,
        total_steps=steps_per_epoch * schedule.epochs,
        world=world,
    )
    sampler = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + rank)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    prog = _restore_progress(folder, cfg, engine, sampler, rank=rank)
    loop = _Loop(
        cfg=cfg,
        engine=engine,
        train_set=enc["train"],
        validation=enc["validation"],
        collate=collate,
        device=device,
        sampler=sampler,
        shard=torch.arange(rank, n_train, world),  # this process's examples
        steps_per_epoch=steps_per_epoch,
        epochs=schedule.epochs,
        sample_rate=sample_rate,
        world=world,
        save=lambda p, seconds: _save_progress(folder, cfg, engine, sampler, p, seconds, rank=rank),
        progress_bar=progress and rank == 0,
    )
    stop_reason, train_seconds = loop.run(
        prog, checkpoint_every=checkpoint_every, stop_after_steps=stop_after_steps, folder=folder
    )

    privacy = engine.privacy
    if privacy is not None:
        privacy.steps = prog.step
        privacy.stop_reason = stop_reason
        if privacy.poisson_sampling and prog.records:
            privacy.epsilon_rdp, privacy.epsilon_prv = (
                prog.records[-1].epsilon_rdp,
                prog.records[-1].epsilon_prv,
            )
    metrics, thresholds = _evaluate(
        cfg,
        engine.inner,
        enc,
        splits,
        collate,
        device,
        label_column=label_column,
        reference_column=reference_column,
        label_names=label_names,
    )
    extra: dict[str, Any] = {
        "stop_reason": stop_reason,
        "world_size": world,
        "physical_batch_size": cfg.train.resolved_physical_batch_size,
        # The schedule actually run (the mode's defaults filled in).
        "schedule": {k: getattr(schedule, k) for k in MODE_DEFAULTS[cfg.train.mode]},
        **({"warm_start": start} if start else {}),
        **thresholds,
    }
    return RunResult(
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        label_names=label_names,
        epochs=prog.records,
        metrics=metrics,
        privacy=privacy,
        data={name: len(enc[name]) for name in enc},
        parameters=parameter_counts(engine.inner),
        timings={
            "train_seconds": train_seconds,
            # The frozen layers' output, computed once (0 when every layer trains, or when cached).
            "feature_seconds": feature_seconds,
            "total_seconds": time.perf_counter() - t_start,
        },
        peak_memory_mb=_peak_memory_mb(device),
        versions=library_versions(),
        extra=extra,
        model=engine.inner if keep_model else None,
    )


@dataclass
class _Loop:
    """The epochs of one run: logical batches, physical chunks, steps, per-epoch records, checkpoints."""

    cfg: RunConfig
    engine: _Engine
    train_set: EncodedReports
    validation: EncodedReports
    collate: Any
    device: torch.device
    sampler: torch.Generator
    shard: torch.Tensor
    steps_per_epoch: int
    epochs: int
    sample_rate: float
    world: int
    save: Any  # (progress, seconds) -> None
    progress_bar: bool

    @property
    def poisson(self) -> bool:
        return self.engine.private is not None and self.cfg.privacy.poisson_sampling

    def batches(self, prog: _Progress):
        """The epoch's logical batches from ``prog.step_in_epoch`` on, as index tensors into the train set."""
        for k in range(prog.step_in_epoch, self.steps_per_epoch):
            if self.poisson:
                yield self.shard[poisson_indices(len(self.shard), self.sample_rate, self.sampler)]
            else:
                assert prog.permutation is not None
                yield prog.permutation.tensor_split(self.steps_per_epoch)[k]

    def run(
        self,
        prog: _Progress,
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
                    tuple(
                        t.to(self.device) for t in self.collate([self.train_set[i] for i in chunk.tolist()])
                    )
                    for chunk in length_sorted_chunks(indices, lengths, physical)
                ]
                if engine.private is not None and not self.poisson:
                    engine.optimizer.expected_batch_size = max(1, len(indices))
                losses = train_step(
                    engine.model,
                    engine.optimizer,
                    chunks,
                    logical_size=len(indices),
                    private=engine.private,
                    distributed=self.world > 1,
                )
                prog.epoch_losses.extend(losses)
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
            prog.epoch_losses, prog.permutation, prog.step_in_epoch = [], None, 0
            if stop_reason != "completed":
                break
            prog.epoch = epoch + 1
            self.save(prog, seconds())
        return stop_reason, seconds()

    def _record(self, prog: _Progress, epoch: int, loop_seconds: float) -> EpochRecord:
        """The epoch's losses, time and epsilon spent so far (both accountants)."""
        t0 = time.perf_counter()
        train_loss = float(torch.cat(prog.epoch_losses).mean()) if prog.epoch_losses else math.nan
        _, val_loss = _predict(self.engine.inner, self.validation, self.collate, self.device)
        record = EpochRecord(epoch, train_loss, val_loss, prog.step, loop_seconds + time.perf_counter() - t0)
        record.train_seconds = loop_seconds
        privacy = self.engine.privacy
        if privacy is not None and privacy.poisson_sampling:
            eps = epsilons(
                history=[(privacy.noise_multiplier, privacy.sample_rate, prog.step)], delta=privacy.delta
            )
            record.epsilon_rdp, record.epsilon_prv = eps["rdp"], eps["prv"]
        return record


def _predict(
    model: nn.Module, data: EncodedReports, collate: Any, device: torch.device, batch_size: int = 128
) -> tuple[np.ndarray, float]:
    """``predict`` over ``data`` in length-sorted batches (little padding), in the original order."""
    if len(data) == 0:
        return np.zeros((0, 0)), math.nan
    lengths = torch.tensor([len(x) for x in data.input_ids])
    order = torch.argsort(lengths, stable=True)
    batches = [collate([data[i] for i in chunk.tolist()]) for chunk in order.split(batch_size)]
    probs, loss = predict(model, batches, device)
    out = np.empty_like(probs)
    out[order.numpy()] = probs
    return out, loss
