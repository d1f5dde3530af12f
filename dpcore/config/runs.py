"""Run configuration: dataclasses that validate themselves, flatten to papermill parameters and hash stably.

One run is the composition of five sections. Every field name is unique across sections, so a run can be
written as one flat mapping (papermill parameters, ``--set key=value`` on the command line) and read back.

>>> cfg = RunConfig.from_flat({"mode": "dp-lora", "epsilon": 1.0, "epochs": 2})
>>> cfg.train.mode, cfg.privacy.epsilon, cfg.train.epochs
('dp-lora', 1.0, 2)
>>> RunConfig.from_flat(cfg.to_flat()) == cfg
True
>>> RunConfig.from_flat({"mode": "dp-lora", "epsilon": 1.0, "noise_multiplier": 1.0})
Traceback (most recent call last):
...
ValueError: dp-lora needs exactly one of epsilon or noise_multiplier, got both
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dpcore.config.values import check as _check
from dpcore.config.values import coerce as _coerce
from dpcore.labels import LABEL_SETS, UNCERTAINTY_POLICIES

Mode = Literal["full", "lora", "dp-lora", "dp-full"]
MODES: tuple[str, ...] = ("full", "lora", "dp-lora", "dp-full")
DP_MODES: tuple[str, ...] = ("dp-lora", "dp-full")
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
# How Opacus gets per-sample gradient norms: ``hooks`` materialises per-sample gradients (cheap for the few
# LoRA weights), ``ghost`` computes their norms without them (cheaper for every weight of the encoder).
# ``auto`` picks the faster one for the mode (see DEFAULT_GRAD_SAMPLE_MODE).
GRAD_SAMPLE_MODES: tuple[str, ...] = ("auto", "hooks", "ghost")
DEFAULT_GRAD_SAMPLE_MODE: dict[str, str] = {"dp-lora": "hooks", "dp-full": "ghost"}
# Reports per forward/backward pass when ``physical_batch_size`` is None. A logical (Poisson) batch is
# sorted by length and run in chunks of this size; it is still one clipped, noised step.
DEFAULT_PHYSICAL_BATCH_SIZE: dict[str, int] = {"full": 32, "lora": 64, "dp-lora": 64, "dp-full": 32}
THRESHOLD_POLICIES: tuple[str, ...] = ("fixed", "validation")
ATTENTION_KERNELS: tuple[str, ...] = ("auto", "eager", "sdpa")
# The forward pass's arithmetic: ``auto`` is bfloat16 autocast where a start-up probe measures it faster than
# float32 on this machine (and agreeing), else float32 (dpcore.training.precision). Weights, per-sample
# norms, clipping and noise stay float32 in every case.
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
# What one unit of privacy is: one report (the paper's setting), or one patient with all their reports.
PRIVACY_UNITS: tuple[str, ...] = ("report", "patient")
# Public data a run may warm-start from (see TrainConfig.warm_start).
WARM_START_CORPORA: tuple[str, ...] = ("synthetic",)
# Tuned per mode (see the book's tuning note): DP needs large logical batches and more epochs, because the
# noise on each step's mean gradient is sigma * C / batch_size. The DP values reach the learning bar at
# about 8,000 training reports; on much smaller data sets no setting brings DP-LoRA close to LoRA.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"epochs": 3, "batch_size": 32, "learning_rate": 5e-3, "head_learning_rate": 3e-2},
    "full": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-4, "head_learning_rate": 3e-2},
    "dp-lora": {"epochs": 10, "batch_size": 1024, "learning_rate": 5e-3, "head_learning_rate": 5e-2},
    "dp-full": {"epochs": 10, "batch_size": 1024, "learning_rate": 5e-4, "head_learning_rate": 5e-2},
}


@dataclass(frozen=True)
class DataConfig:
    """Where the reports come from and how they are split.

    ``corpus`` is ``synthetic-cxr`` (the embedded default) or the name of a loader; ``data_path`` points
    at files on disk for real corpora.
    """

    corpus: str = "synthetic-cxr"
    # Synthetic corpora only. 10,000 reports (8,000 for training) is the scale at which the tuned DP
    # defaults come within 0.05 weighted F1 of LoRA at epsilon 10; chapters that must run on a laptop in
    # minutes pass fewer.
    n_reports: int = 10_000
    data_seed: int = 0
    data_path: str | None = None
    text_column: str = "findings"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        _check(self.n_reports > 0, f"n_reports must be positive, got {self.n_reports}")
        fr = tuple(float(x) for x in self.split_fractions)
        object.__setattr__(self, "split_fractions", fr)
        _check(
            len(fr) == 3 and all(x > 0 for x in fr) and abs(sum(fr) - 1.0) < 1e-6,
            f"split_fractions must be three positive numbers summing to 1, got {self.split_fractions}",
        )


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher labels the training reports, and how uncertain labels become binary targets."""

    teacher: str = "rules"
    label_set: str = "chexpert"
    uncertainty_policy: str = "u-ones"

    def __post_init__(self) -> None:
        _check(
            self.label_set in LABEL_SETS,
            f"unknown label_set {self.label_set!r}; use one of {sorted(LABEL_SETS)}",
        )
        _check(
            self.uncertainty_policy in UNCERTAINTY_POLICIES,
            f"unknown uncertainty_policy {self.uncertainty_policy!r}; use one of {UNCERTAINTY_POLICIES}",
        )


@dataclass(frozen=True)
class ModelConfig:
    """The encoder, its pooling, and the LoRA adapters (ignored in full fine-tuning).

    ``model`` is ``minilm-l6`` (the packaged pretrained MiniLM-L6), a local folder, or a hub id.
    ``num_layers`` keeps only the first k encoder layers (None keeps all). ``trainable_layers`` trains only
    the top k of them (LoRA adapters there, or every weight there in the full modes); the layers below are
    frozen, and since they are then a fixed public function of each report, their output is computed once
    per report and cached (no privacy cost, and an epoch costs only the top layers). 0 trains the head
    alone on the frozen encoder (a linear probe); None trains all.
    """

    model: str = "minilm-l6"
    num_layers: int | None = None
    trainable_layers: int | None = None
    max_length: int = 128
    pooling: str = "mean"
    # A data-independent prior for every label's logit (-2 is a positive rate of about 12%): findings are
    # rare, and a head that starts at 0.5 spends its first hundreds of steps learning that. Fitting it to
    # the training labels' frequencies instead would be a statistic of private data.
    head_bias_init: float = -2.0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    # Keep each adapter's A at its random (data-independent) initialisation and train B alone (FFA-LoRA,
    # Sun et al., ICLR 2024): under DP-SGD the noise on A and on B multiply in the product BA, and half the
    # adapters' coordinates stop taking noise; the update becomes linear in what trains.
    lora_freeze_a: bool = False
    # Dropout in the encoder and before the head while training: None keeps the checkpoint's own (0.1 for
    # MiniLM and BERT). On a CPU dropout's random masks cost as much as the layer's matrix products (and
    # keep attention off its fused kernel), and under DP the gradient already carries the mechanism's noise.
    dropout: float | None = None
    # The attention kernel: ``auto`` is PyTorch's fused SDPA on a GPU and the plain (eager) product on a
    # CPU, where SDPA's backward pass is several times slower than the eager one's (measured in training).
    attention: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        _check(
            self.attention in ATTENTION_KERNELS,
            f"attention must be one of {ATTENTION_KERNELS}, got {self.attention!r}",
        )
        _check(
            self.dropout is None or 0.0 <= self.dropout < 1.0,
            f"dropout must be None or in [0, 1), got {self.dropout}",
        )
        _check(
            self.num_layers is None or self.num_layers > 0,
            f"num_layers must be positive, got {self.num_layers}",
        )
        _check(
            self.trainable_layers is None or self.trainable_layers >= 0,
            f"trainable_layers must be 0 (the head alone) or more, got {self.trainable_layers}",
        )
        _check(self.max_length >= 8, f"max_length must be at least 8, got {self.max_length}")
        _check(self.pooling in ("mean", "cls"), f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        _check(self.lora_r > 0, f"lora_r must be positive, got {self.lora_r}")
        _check(0.0 <= self.lora_dropout < 1.0, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        _check(len(self.lora_targets) > 0, "lora_targets must name at least one module")


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings. Give exactly one of ``epsilon`` (the noise is then found by ``accountant``) or
    ``noise_multiplier``. ``delta`` defaults to a power of ten at most 1/(10 N) for N training reports.

    ``poisson_sampling=False`` exists for tests of the optimizer alone; no epsilon is reported then,
    because the accountants' guarantee assumes Poisson sampling.
    """

    epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    poisson_sampling: bool = True
    # Training stops before the step that would take epsilon (by ``accountant``) past this budget. With
    # ``epsilon`` given, the budget is ``epsilon`` itself unless this is set.
    max_epsilon: float | None = None
    grad_sample_mode: str = "auto"
    # ``patient``: Poisson-sample patients, clip each sampled patient's summed gradient (over at most
    # ``max_reports_per_patient`` of their reports; None keeps all) to ``max_grad_norm`` as one unit, and
    # account over patients. ``report`` protects one report; a patient with k reports gets group privacy.
    privacy_unit: str = "report"
    max_reports_per_patient: int | None = None
    # Noise and sampling from the operating system's entropy: nobody (not even the seed's holder) can replay
    # them. None: on when the run saves a model for release, off for reproducible research runs. A DP model
    # is never saved with it off (the saved folder publishes train.seed): that is refused, not released.
    secure: bool | None = None

    def __post_init__(self) -> None:
        _check(self.epsilon is None or self.epsilon > 0, f"epsilon must be positive, got {self.epsilon}")
        _check(
            self.noise_multiplier is None or self.noise_multiplier >= 0,
            f"noise_multiplier must be non-negative, got {self.noise_multiplier}",
        )
        _check(self.delta is None or 0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
        _check(self.max_grad_norm > 0, f"max_grad_norm must be positive, got {self.max_grad_norm}")
        _check(
            self.accountant in ACCOUNTANTS,
            f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}",
        )
        _check(
            self.max_epsilon is None or self.max_epsilon > 0,
            f"max_epsilon must be positive, got {self.max_epsilon}",
        )
        _check(
            self.grad_sample_mode in GRAD_SAMPLE_MODES,
            f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}",
        )
        _check(
            self.privacy_unit in PRIVACY_UNITS,
            f"privacy_unit must be one of {PRIVACY_UNITS}, got {self.privacy_unit!r}",
        )
        _check(
            self.max_reports_per_patient is None or self.max_reports_per_patient > 0,
            f"max_reports_per_patient must be positive, got {self.max_reports_per_patient}",
        )

    def resolved_grad_sample_mode(self, mode: str) -> str:
        """The grad sample mode a DP ``mode`` runs with (``auto`` resolved; the patient unit needs hooks)."""
        if self.grad_sample_mode != "auto":
            return self.grad_sample_mode
        if self.privacy_unit == "patient":
            return "hooks"
        return DEFAULT_GRAD_SAMPLE_MODE.get(mode, "hooks")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: mode, schedule, seeds and the decision thresholds.

    ``batch_size`` is the logical batch (the expected Poisson batch under DP); ``physical_batch_size`` is how
    many reports go through the model at once (None: a per-mode default), which changes speed and memory,
    not the mathematics. ``threshold_policy="validation"`` tunes one threshold per label on the validation
    split: under DP that is a release of private data outside the accountant, and the result says so.

    ``warm_start="synthetic"``: the adapters and head (or the trainable weights) are first trained without
    privacy on ``warm_start_reports`` *public* reports, the synthetic corpus of the run's label set, at the non-private mode's defaults, and the run starts from there. Public data costs no
    privacy; a synthetic warm start for a synthetic private corpus comes from the same generator, which
    flatters the private run (the book says so wherever it shows one).
    """

    mode: str = "lora"
    # None: the mode's tuned default (MODE_DEFAULTS); ``resolved()`` fills them in.
    epochs: int | None = None
    batch_size: int | None = None
    physical_batch_size: int | None = None
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    seed: int = 0
    threshold: float = 0.5
    threshold_policy: str = "fixed"
    device: str = "auto"
    warm_start: str | None = None
    warm_start_reports: int = 2000
    precision: str = "auto"
    # For the membership attack (dpcore.attacks.membership): the per-example losses of this many training
    # reports (members) and as many test reports (non-members) are kept in the result. A diagnostic of
    # private data outside epsilon; 0 keeps none.
    membership_sample: int = 0

    def __post_init__(self) -> None:
        _check(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        for name in MODE_DEFAULTS[self.mode]:
            value = getattr(self, name)
            _check(value is None or value > 0, f"{name} must be positive, got {value}")
        _check(0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold}")
        _check(
            self.physical_batch_size is None or self.physical_batch_size > 0,
            f"physical_batch_size must be positive, got {self.physical_batch_size}",
        )
        _check(
            self.warm_start in (None, *WARM_START_CORPORA),
            f"warm_start must be None or a public corpus {WARM_START_CORPORA}, got {self.warm_start!r}",
        )
        _check(
            self.warm_start_reports > 0, f"warm_start_reports must be positive, got {self.warm_start_reports}"
        )
        _check(
            self.membership_sample >= 0, f"membership_sample must be 0 or more, got {self.membership_sample}"
        )
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(
            self.threshold_policy in THRESHOLD_POLICIES,
            f"threshold_policy must be one of {THRESHOLD_POLICIES}, got {self.threshold_policy!r}",
        )

    @property
    def resolved_physical_batch_size(self) -> int:
        return self.physical_batch_size or DEFAULT_PHYSICAL_BATCH_SIZE[self.mode]

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` schedule field set to the mode's default.

        >>> TrainConfig(mode="dp-lora", epochs=2).resolved().batch_size
        1024
        """
        defaults = {k: v for k, v in MODE_DEFAULTS[self.mode].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **defaults)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "teacher": TeacherConfig,
    "model": ModelConfig,
    "privacy": PrivacyConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """One training run: the composition of the five sections, validated as a whole."""

    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        mode = self.train.mode
        given = [n for n in ("epsilon", "noise_multiplier") if getattr(self.privacy, n) is not None]
        self._check_budget()
        if mode in DP_MODES:
            _check(
                len(given) == 1,
                f"{mode} needs exactly one of epsilon or noise_multiplier, got "
                + ("both" if len(given) == 2 else "neither"),
            )
        else:
            _check(not given, f"{' and '.join(given)} only apply to DP modes {DP_MODES}, not to {mode!r}")
            _check(
                self.privacy.max_epsilon is None,
                f"max_epsilon only applies to DP modes {DP_MODES}, not to {mode!r}",
            )
            _check(
                self.privacy.privacy_unit == "report",
                f"privacy_unit {self.privacy.privacy_unit!r} only applies to DP modes {DP_MODES}, not to {mode!r}",
            )

    def _check_budget(self) -> None:
        """A budget the run could not enforce is an error, not a silent no-op: without noise epsilon is
        infinite, and without Poisson sampling the accountants' epsilon does not hold."""
        p = self.privacy
        budgets = [n for n in ("epsilon", "max_epsilon") if getattr(p, n) is not None]
        _check(
            not budgets or p.poisson_sampling,
            f"{' and '.join(budgets)} need poisson_sampling: the accountants' epsilon assumes it",
        )
        _check(
            p.max_epsilon is None or p.noise_multiplier != 0,
            "max_epsilon with noise_multiplier 0: without noise epsilon is infinite, no budget can hold",
        )
        _check(
            p.privacy_unit == "report" or p.resolved_grad_sample_mode(self.train.mode) == "hooks",
            "privacy_unit 'patient' needs grad_sample_mode 'hooks' (ghost clipping cannot add up a "
            "patient's reports before clipping)",
        )
        _check(
            not self.is_private
            or self.train.precision != "bfloat16"
            or p.resolved_grad_sample_mode(self.train.mode) == "hooks",
            "precision 'bfloat16' under DP needs grad_sample_mode 'hooks': ghost clipping computes each "
            "report's gradient norm inside the backward pass, in bfloat16, and a norm rounded low would let a "
            "clipped gradient exceed max_grad_norm",
        )

    @property
    def is_private(self) -> bool:
        return self.train.mode in DP_MODES

    # -- conversion -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (YAML/JSON friendly; tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> RunConfig:
        unknown = set(data) - set(SECTIONS)
        _check(not unknown, f"unknown config sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
        return cls(**{name: _section(kind, data.get(name, {}), name) for name, kind in SECTIONS.items()})

    def to_flat(self) -> dict[str, Any]:
        """One flat mapping, the form of papermill parameters."""
        return {k: v for section in self.to_dict().values() for k, v in section.items()}

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Build from a flat mapping; unknown keys are an error that names them."""
        owner = {f.name: name for name, kind in SECTIONS.items() for f in fields(kind)}
        unknown = sorted(set(flat) - set(owner))
        _check(not unknown, f"unknown parameters {unknown}")
        nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in flat.items():
            nested[owner[key]][key] = value
        return cls.from_dict(nested)

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with some flat parameters changed (validated again)."""
        return RunConfig.from_flat({**self.to_flat(), **flat})

    def config_hash(self) -> str:
        """Stable short hash of the whole configuration: the key of the results store.

        >>> RunConfig().replace(mode="lora").config_hash() == RunConfig().replace(mode="lora").config_hash()
        True
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _section(kind: type, values: Mapping[str, Any] | None, name: str) -> Any:
    if values is None:  # an empty section in YAML (``train:``) reads as None
        values = {}
    _check(
        isinstance(values, Mapping),
        f"config section {name!r} must be a mapping of parameters, got {type(values).__name__}",
    )
    hints = field_types(kind)
    unknown = sorted(set(values) - set(hints))
    _check(not unknown, f"unknown keys {unknown} in config section {name!r}; known: {sorted(hints)}")
    return kind(**{key: _coerce(key, value, hints[key]) for key, value in values.items()})


@functools.cache
def field_types(kind: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a config dataclass (the rules :func:`_coerce` follows).

    >>> field_types(ModelConfig)["lora_targets"]
    tuple[str, ...]
    """
    hints = typing.get_type_hints(kind)
    return {f.name: hints[f.name] for f in fields(kind)}


def flat_parameter_names() -> list[str]:
    """Every flat parameter name, in section order (what a notebook's parameters cell may set)."""
    return [f.name for kind in SECTIONS.values() for f in fields(kind)]
