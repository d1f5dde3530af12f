"""The training loop for every mode, the Opacus wiring, and the typed result of a run.

The contract with Opacus is a *per-example* loss: binary cross-entropy averaged over the labels gives a
vector of shape ``[B]``; the loop reduces it with a mean (Opacus's ``loss_reduction="mean"``).
"""

from __future__ import annotations

import dataclasses
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
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dpcore import __version__
from dpcore.config import RunConfig
from dpcore.labels import binarize, get_label_set
from dpcore.metrics import evaluate
from dpcore.models import build_model, load_tokenizer, parameter_counts
from dpcore.privacy import check_delta, default_delta, epsilons, noise_for_epsilon

IGNORE = -1.0  # target value of a label left out of the loss (the "ignore" uncertainty policy)


# -- data ---------------------------------------------------------------------------------------------
class EncodedReports(Dataset):
    """Token ids and binary targets; items are ``(input_ids, targets)`` tensors (Opacus wants tuples)."""

    def __init__(self, input_ids: Sequence[Sequence[int]], targets: np.ndarray):
        if len(input_ids) != len(targets):
            raise ValueError(f"{len(input_ids)} token sequences but {len(targets)} target rows")
        self.input_ids = [torch.tensor(ids, dtype=torch.long) for ids in input_ids]
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
    """A collate function that pads each batch to its own longest report (dynamic padding)."""

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        ids = nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True, padding_value=pad_id)
        lengths = torch.tensor([len(b[0]) for b in batch])
        mask = (torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()
        return ids, mask, torch.stack([b[1] for b in batch])

    return collate


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
    lr = cfg.train.learning_rate
    groups = [{"params": body, "lr": lr}, {"params": head, "lr": cfg.train.head_learning_rate or lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.train.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, float]:
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


def train(
    cfg: RunConfig,
    splits: datasets.DatasetDict,
    *,
    label_column: str = "teacher_labels",
    reference_column: str = "labels",
    progress: bool = True,
    keep_model: bool = False,
) -> RunResult:
    """Train one configuration on ``splits`` (``train``/``validation``/``test``) and evaluate it.

    The model learns ``label_column`` (the teacher's labels); validation loss is measured on the same kind
    of labels (all a real user has); test metrics are computed against both ``reference_column`` (ground
    truth, or the data set's shipped labels) and the teacher.
    """
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    label_names = list(get_label_set(cfg.teacher.label_set).labels)
    policy = cfg.teacher.uncertainty_policy
    tokenizer = load_tokenizer(cfg.model.model)
    enc = {
        name: encode(
            splits[name],
            tokenizer=tokenizer,
            text_column=cfg.data.text_column,
            label_column=label_column,
            policy=policy,
            max_length=cfg.model.max_length,
        )
        for name in ("train", "validation", "test")
    }
    n_train = len(enc["train"])
    if n_train == 0:
        raise ValueError("the training split is empty")
    collate = pad_collate(tokenizer.pad_token_id or 0)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(
        enc["train"], batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate, generator=generator
    )
    eval_loaders = {
        name: DataLoader(enc[name], batch_size=128, shuffle=False, collate_fn=collate)
        for name in ("validation", "test")
    }

    model = build_model(cfg.model, num_labels=len(label_names), mode=cfg.train.mode).to(device)
    optimizer = _optimizer(model, cfg)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.train.epochs

    engine: PrivacyEngine | None = None
    privacy: PrivacyReport | None = None
    if cfg.is_private:
        p = cfg.privacy
        delta = check_delta(p.delta if p.delta is not None else default_delta(n_train), n_train)
        sample_rate = cfg.train.batch_size / n_train
        sigma = (
            p.noise_multiplier
            if p.noise_multiplier is not None
            else noise_for_epsilon(
                target_epsilon=p.epsilon,
                delta=delta,
                sample_rate=sample_rate,
                steps=total_steps,
                accountant=p.accountant,
            )
        )
        engine = PrivacyEngine(accountant=p.accountant)
        model, optimizer, train_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=train_loader,
            noise_multiplier=sigma,
            max_grad_norm=p.max_grad_norm,
            poisson_sampling=p.poisson_sampling,
            grad_sample_mode="hooks",
        )
        privacy = PrivacyReport(
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
        )
    scheduler = _schedule(optimizer, total_steps=total_steps, warmup_ratio=cfg.train.warmup_ratio)

    records: list[EpochRecord] = []
    step = 0
    t_train = time.perf_counter()
    for epoch in range(1, cfg.train.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        losses: list[torch.Tensor] = []
        bar = tqdm(train_loader, desc=f"{cfg.train.mode} epoch {epoch}", disable=not progress, mininterval=5)
        for ids, mask, targets in bar:
            loss_vec = per_example_loss(model(ids.to(device), mask.to(device)), targets.to(device))
            loss_vec.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            losses.append(loss_vec.detach().cpu())
        train_loss = float(torch.cat(losses).mean()) if losses else math.nan
        _, val_loss = predict(model, eval_loaders["validation"], device)
        record = EpochRecord(epoch, train_loss, val_loss, step, time.perf_counter() - t_epoch)
        if privacy is not None and engine is not None and privacy.poisson_sampling:
            eps = epsilons(history=engine.accountant.history, delta=privacy.delta)
            record.epsilon_rdp, record.epsilon_prv = eps["rdp"], eps["prv"]
        records.append(record)
    train_seconds = time.perf_counter() - t_train

    if privacy is not None:
        privacy.steps = step
        if privacy.poisson_sampling and records:
            privacy.epsilon_rdp, privacy.epsilon_prv = records[-1].epsilon_rdp, records[-1].epsilon_prv

    probs, _ = predict(model, eval_loaders["test"], device)
    test = splits["test"]
    reference = targets_from_labels(test[reference_column], policy="u-ones" if policy == "ignore" else policy)
    teacher = targets_from_labels(test[label_column], policy="u-ones" if policy == "ignore" else policy)
    metrics = {
        "test_vs_reference": evaluate(
            reference, probs, label_names=label_names, threshold=cfg.train.threshold
        ),
        "test_vs_teacher": evaluate(teacher, probs, label_names=label_names, threshold=cfg.train.threshold),
    }
    inner = model._module if hasattr(model, "_module") else model
    return RunResult(
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        label_names=label_names,
        epochs=records,
        metrics=metrics,
        privacy=privacy,
        data={name: len(enc[name]) for name in enc},
        parameters=parameter_counts(inner),
        timings={"train_seconds": train_seconds, "total_seconds": time.perf_counter() - t_start},
        peak_memory_mb=_peak_memory_mb(device),
        versions=library_versions(),
        model=inner if keep_model else None,
    )
