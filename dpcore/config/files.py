"""A run configuration from what a user writes: a YAML file (nested sections or flat keys) and ``key=value``
overrides, as the command line's ``--config`` and ``--set`` take them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dpcore.config.runs import SECTIONS, RunConfig


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, values read as YAML (``1e-3``, ``[query, value]``). The configuration then checks
    each against its field's type: a list field takes one name or a comma list too (``lora_targets=query``).

    >>> parse_overrides(["epochs=2", "lora_targets=[query, value]"])
    {'epochs': 2, 'lora_targets': ['query', 'value']}
    >>> parse_overrides(["epochs"])
    Traceback (most recent call last):
    ...
    ValueError: --set expects key=value, got 'epochs'
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {key.strip()}: cannot read {value!r}") from None
    return out


def load_config(path: str | Path | None, sets: Sequence[str] = ()) -> RunConfig:
    """A run configuration from a YAML file (nested sections or flat keys) and ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"file {path}: not YAML ({' '.join(str(err).split())})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"file {path}: expected a mapping of parameters, got {type(loaded).__name__}")
        nested = all(isinstance(v, dict) for v in loaded.values()) and set(loaded) <= set(SECTIONS)
        data = RunConfig.from_dict(loaded).to_flat() if nested and loaded else loaded
    return RunConfig.from_flat({**data, **parse_overrides(sets)})
