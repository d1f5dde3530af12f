"""What a run leaves behind: per-epoch records, the privacy report and the typed result (JSON on disk)."""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import opacus
import peft
import torch
import transformers
from torch import nn

from dpcore import __version__


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
    # What one unit of privacy is ("report" or "patient") and how many units the training split holds.
    unit: str = "report"
    units: int = 0
    # The largest number of training reports one patient has; at the report unit, such a patient is
    # protected only by group privacy: (group_epsilon, group_delta), None when no epsilon is reported.
    max_reports_per_patient: int = 1
    group_epsilon: float | None = None
    group_delta: float | None = None
    # Noise and sampling drawn from the operating system's entropy (a run nobody can replay), or from
    # generators seeded by ``train.seed`` (a reproducible research run: the seed's holder can replay both).
    secure_rng: bool = False


@dataclass
class RunResult:
    """Everything a run leaves behind, JSON on disk (see :mod:`dpcore.pipeline.results`)."""

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
    # What epsilon covers (the trained weights, and what is computed from them alone) and, by field, what
    # was computed from private data without noise: released outside the guarantee.
    covered_by_epsilon: str = ""
    outside_epsilon: dict[str, str] = field(default_factory=dict)
    # The trained model, when asked for (``train(..., keep_model=True)``); never serialised.
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def mode(self) -> str:
        return self.config["train"]["mode"]

    @property
    def has_reference_labels(self) -> bool:
        """Whether the test split had reference labels to score against (a hospital's own corpus has none)."""
        return self.metrics.get("test_vs_reference") is not None

    @property
    def weighted_f1(self) -> float | None:
        """Weighted F1 on the test split against the reference labels (the paper's metric); ``None`` when the
        corpus has no reference labels (see :attr:`teacher_weighted_f1` for agreement with the teacher)."""
        ref = self.metrics.get("test_vs_reference")
        return None if ref is None else ref["f1"]["weighted"]

    @property
    def teacher_weighted_f1(self) -> float | None:
        """Weighted F1 on the test split against the teacher's labels: agreement with the teacher."""
        teacher = self.metrics.get("test_vs_teacher")
        return None if teacher is None else teacher["f1"]["weighted"]

    @property
    def validation_weighted_f1(self) -> float | None:
        """Weighted F1 on the validation split against the teacher: what choices are made on (outside ε)."""
        val = self.metrics.get("validation_vs_teacher")
        return None if val is None else val["f1"]["weighted"]

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


def library_versions() -> dict[str, str]:

    return {
        "dpcore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "opacus": opacus.__version__,
        "datasets": datasets.__version__,
    }
