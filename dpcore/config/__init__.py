"""Run configuration, the foundation every other layer reads: dataclasses that validate themselves, flatten
to papermill parameters and hash stably (:mod:`~dpcore.config.runs`), values checked against each field's
type (:mod:`~dpcore.config.values`), and configurations read from YAML files and ``key=value`` overrides
(:mod:`~dpcore.config.files`)."""

from dpcore.config.files import load_config, parse_overrides
from dpcore.config.runs import (
    ACCOUNTANTS,
    ATTENTION_KERNELS,
    DEFAULT_GRAD_SAMPLE_MODE,
    DEFAULT_PHYSICAL_BATCH_SIZE,
    DP_MODES,
    GRAD_SAMPLE_MODES,
    MODE_DEFAULTS,
    MODES,
    PRECISIONS,
    PRIVACY_UNITS,
    SECTIONS,
    THRESHOLD_POLICIES,
    WARM_START_CORPORA,
    DataConfig,
    Mode,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    TeacherConfig,
    TrainConfig,
    field_types,
    flat_parameter_names,
)

__all__ = [
    "ACCOUNTANTS",
    "ATTENTION_KERNELS",
    "DEFAULT_GRAD_SAMPLE_MODE",
    "DEFAULT_PHYSICAL_BATCH_SIZE",
    "DP_MODES",
    "GRAD_SAMPLE_MODES",
    "MODES",
    "MODE_DEFAULTS",
    "PRECISIONS",
    "PRIVACY_UNITS",
    "SECTIONS",
    "THRESHOLD_POLICIES",
    "WARM_START_CORPORA",
    "DataConfig",
    "Mode",
    "ModelConfig",
    "PrivacyConfig",
    "RunConfig",
    "TeacherConfig",
    "TrainConfig",
    "field_types",
    "flat_parameter_names",
    "load_config",
    "parse_overrides",
]
