"""Studies: a named grid of run configurations in a YAML file, run through the results store.

A study file (``studies/<name>.yml``) has a ``base`` of flat run parameters, ``axes`` whose cartesian product
(in file order) gives the runs, and named ``profiles`` that change the base or replace and add whole axes
(``quick`` is the default profile). A list value inside an axis entry expands into one entry per value.

>>> study = Study.from_dict({
...     "name": "demo",
...     "base": {"n_reports": 400},
...     "axes": {"run": [{"mode": "lora"}, {"mode": "dp-lora", "epsilon": [1, 10]}]},
...     "profiles": {"paper": {"base": {"n_reports": 4000}, "axes": {"seed": [{"seed": [0, 1]}]}}},
... })
>>> describe([c.to_flat() for c in study.configs()], order=study.axis_keys())
['mode=lora', 'mode=dp-lora epsilon=1.0', 'mode=dp-lora epsilon=10.0']
>>> [(c.data.n_reports, c.train.seed) for c in study.configs("paper")][:2]
[(4000, 0), (4000, 1)]
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from dpcore import pipeline
from dpcore.config import SECTIONS, RunConfig
from dpcore.pipeline.results import ResultStore
from dpcore.study.tables import describe, study_table
from dpcore.training import RunResult

STUDY_KEYS = ("name", "description", "base", "axes", "profiles")
PROFILE_KEYS = ("description", "base", "axes")
DEFAULT_PROFILE = "quick"
_TYPES = {f.name: str(f.type) for kind in SECTIONS.values() for f in fields(kind)}


class StudyError(ValueError):
    """A study that cannot be found, read or expanded; the message names the file and the key."""


def _expands(key: str, value: Any) -> bool:
    """Whether an axis entry's ``value`` is a list of alternatives (a tuple parameter such as
    ``lora_targets`` takes a list as one value; a list of lists is its alternatives)."""
    if not isinstance(value, list):
        return False
    return not _TYPES[key].startswith("tuple") or (bool(value) and all(isinstance(v, list) for v in value))


def _check_flat(values: Any, where: str, *, axis: bool = False) -> dict[str, Any]:
    """``values`` as a dict of known flat parameters (lists of alternatives only inside an axis entry)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise StudyError(f"{where}: expected a mapping of run parameters, got {type(values).__name__}")
    for key, value in values.items():
        if key not in _TYPES:
            close = difflib.get_close_matches(str(key), list(_TYPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see `dpcore config` for the parameters"
            raise StudyError(f"{where}: unknown parameter {key!r}{hint}")
        if isinstance(value, Mapping):
            raise StudyError(f"{where}.{key}: expected a value, got a mapping")
        if _expands(key, value) and not axis:
            raise StudyError(f"{where}.{key}: a list of values only expands inside an axis entry")
        if _expands(key, value) and not value:
            raise StudyError(f"{where}.{key}: empty list of values")
    return dict(values)


def _check_axes(axes: Any, where: str) -> dict[str, list[dict[str, Any]]]:
    if axes is None:
        return {}
    if not isinstance(axes, Mapping):
        raise StudyError(f"{where}: expected a mapping of axis names to lists of entries")
    out = {}
    for name, entries in axes.items():
        if not isinstance(entries, list) or not entries:
            raise StudyError(
                f"{where}.{name}: an axis is a non-empty list of entries (mappings of parameters)"
            )
        out[str(name)] = [_check_flat(e, f"{where}.{name}[{i}]", axis=True) for i, e in enumerate(entries)]
    return out


def _expand_entry(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry, or one per combination of its lists of values (in key order)."""
    keys = [k for k, v in entry.items() if _expands(k, v)]
    return [
        {**entry, **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(entry[k] for k in keys))
    ]


def _brief(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "{}"


@dataclass(frozen=True)
class Study:
    """A named grid of runs: ``base`` parameters, ``axes`` (name -> entries) and ``profiles``."""

    name: str
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path_or_name: str | Path) -> Study:
        """A study file, or a bare name (``grid``) found as ``studies/grid.yml`` here or in a parent folder."""
        path = Path(path_or_name)
        if not path.is_file():
            text = str(path_or_name)
            if path.suffix in (".yml", ".yaml") or "/" in text or "\\" in text:
                raise StudyError(f"unknown study {text!r}: no such file")
            found = [
                folder / "studies" / f"{text}{suffix}"
                for folder in (Path.cwd(), *Path.cwd().parents)
                for suffix in (".yml", ".yaml")
            ]
            path = next((p for p in found if p.is_file()), None)
            if path is None:
                raise StudyError(
                    f"unknown study {text!r}: no studies/{text}.yml in {Path.cwd()} or its parents"
                )
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise StudyError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        return cls.from_dict(data, path=path)

    @classmethod
    def from_dict(cls, data: Any, *, path: str | Path | None = None) -> Study:
        """A study from its parsed YAML, validated (errors name ``path`` and the key)."""
        where = str(path) if path is not None else "study"
        if not isinstance(data, Mapping):
            raise StudyError(f"{where}: expected a mapping with keys {list(STUDY_KEYS)}")
        unknown = [k for k in data if k not in STUDY_KEYS]
        if unknown:
            raise StudyError(f"{where}: unknown key {unknown[0]!r}; a study has {list(STUDY_KEYS)}")
        profiles: dict[str, dict[str, Any]] = {}
        for name, profile in (data.get("profiles") or {}).items():
            profile = profile or {}
            bad = [k for k in profile if k not in PROFILE_KEYS] if isinstance(profile, Mapping) else [profile]
            if bad:
                raise StudyError(
                    f"{where}: profiles.{name}: unknown key {bad[0]!r}; a profile has {list(PROFILE_KEYS)}"
                )
            profiles[str(name)] = {
                "description": str(profile.get("description") or ""),
                "base": _check_flat(profile.get("base"), f"{where}: profiles.{name}.base"),
                "axes": _check_axes(profile.get("axes"), f"{where}: profiles.{name}.axes"),
            }
        default_name = Path(path).stem if path is not None else "study"
        return cls(
            name=str(data.get("name") or default_name),
            description=str(data.get("description") or ""),
            base=_check_flat(data.get("base"), f"{where}: base"),
            axes=_check_axes(data.get("axes"), f"{where}: axes"),
            profiles=profiles,
            path=Path(path) if path is not None else None,
        )

    @property
    def where(self) -> str:
        """How errors name this study: its file, or its name."""
        return str(self.path) if self.path is not None else f"study {self.name!r}"

    def profile_names(self) -> list[str]:
        """``quick`` (always available, empty unless defined) and the profiles the file defines."""
        return [DEFAULT_PROFILE, *(p for p in self.profiles if p != DEFAULT_PROFILE)]

    def resolved(
        self, profile: str = DEFAULT_PROFILE
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """(base, axes) of ``profile``: its base merged over the study's, its axes replacing or added."""
        if profile not in self.profile_names():
            raise StudyError(
                f"{self.where}: unknown profile {profile!r}; this study has {self.profile_names()}"
            )
        chosen = self.profiles.get(profile, {})
        return {**self.base, **chosen.get("base", {})}, {**self.axes, **chosen.get("axes", {})}

    def axis_keys(self, profile: str = DEFAULT_PROFILE) -> list[str]:
        """The parameters the axes of ``profile`` set, in file order (how runs are described)."""
        _, axes = self.resolved(profile)
        return list(dict.fromkeys(k for entries in axes.values() for entry in entries for k in entry))

    def configs(
        self, profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None
    ) -> list[RunConfig]:
        """Every run of ``profile``, in product order, ``overrides`` applied on top; duplicates once."""
        base, axes = self.resolved(profile)
        on_top = _check_flat(overrides, f"{self.where}: overrides")
        expanded = {
            name: [(i, e) for i, entry in enumerate(entries) for e in _expand_entry(entry)]
            for name, entries in axes.items()
        }
        owner: dict[str, str] = {}
        for name, entries in axes.items():
            for key in {k for entry in entries for k in entry}:
                if key in owner:
                    raise StudyError(f"{self.where}: axes {owner[key]!r} and {name!r} both set {key!r}")
                owner[key] = name
        out: list[RunConfig] = []
        seen: set[str] = set()
        for combo in itertools.product(*expanded.values()):
            flat = dict(base)
            for _, entry in combo:
                flat.update(entry)
            flat.update(on_top)
            try:
                cfg = RunConfig.from_flat(flat)
            except (ValueError, TypeError) as err:
                run = "; ".join(f"{a}[{i}] ({_brief(e)})" for a, (i, e) in zip(expanded, combo, strict=True))
                raise StudyError(f"{self.where}: {run or 'base'}: {err}") from None
            if (key := cfg.config_hash()) not in seen:
                seen.add(key)
                out.append(cfg)
        return out


def _store(store: ResultStore | str | Path) -> ResultStore:
    return store if isinstance(store, ResultStore) else ResultStore(store)


def _splits_key(cfg: RunConfig) -> str:
    """The sections that decide the splits: configurations with the same data and teacher share them."""
    return json.dumps([cfg.to_dict()["data"], cfg.to_dict()["teacher"]], sort_keys=True)


def plan(
    study: Study,
    *,
    profile: str = DEFAULT_PROFILE,
    overrides: Mapping[str, Any] | None = None,
    store: ResultStore | str | Path,
) -> pd.DataFrame:
    """One row per configuration: ``config_hash``, ``run`` (its varying fields) and ``status``
    (``stored``, or ``to train``)."""
    store = _store(store)
    configs = study.configs(profile, overrides)
    return pd.DataFrame(
        {
            "config_hash": [c.config_hash() for c in configs],
            "run": describe([c.to_flat() for c in configs], order=study.axis_keys(profile)),
            "status": ["stored" if store.get(c) is not None else "to train" for c in configs],
        },
        columns=["config_hash", "run", "status"],
    )


def run_study(
    study: Study,
    *,
    profile: str = DEFAULT_PROFILE,
    overrides: Mapping[str, Any] | None = None,
    store: ResultStore | str | Path,
    progress: bool = True,
    on_result: Callable[[RunResult], None] | None = None,
) -> pd.DataFrame:
    """Every run of the study, from ``store`` or trained and stored; the tidy table (:func:`study_table`).

    Splits are prepared once per (data, teacher) pair, and only when something must train. Each run trains
    with a checkpoint folder ``store.root/checkpoints/<config hash>``: a killed study re-run skips finished
    runs and resumes the interrupted one mid-run; the folder goes once the result is stored.
    ``on_result(result)`` is called as each run's result becomes available.
    """
    store = _store(store)
    configs = study.configs(profile, overrides)
    names = describe([c.to_flat() for c in configs], order=study.axis_keys(profile))
    keys = [_splits_key(c) for c in configs]
    last_use = {key: i for i, key in enumerate(keys)}
    splits: dict[str, Any] = {}
    results: list[RunResult] = []
    bar = tqdm(configs, desc=study.name, unit="run", disable=not progress)
    for i, cfg in enumerate(bar):
        result = store.get(cfg)
        checkpoint = store.root / "checkpoints" / cfg.config_hash()
        if result is None:
            bar.set_description(f"{study.name}: {names[i]}")
            if keys[i] not in splits:
                splits[keys[i]] = pipeline.prepare_splits(cfg)
            result = pipeline.run(
                cfg, store=store, splits=splits[keys[i]], progress=progress, checkpoint_dir=checkpoint
            )
        if checkpoint.exists():
            shutil.rmtree(checkpoint, ignore_errors=True)
        if last_use[keys[i]] == i:
            splits.pop(keys[i], None)  # no later run needs them
        results.append(result)
        if on_result is not None:
            on_result(result)
    bar.close()
    with contextlib.suppress(OSError):
        (store.root / "checkpoints").rmdir()  # only when empty: no run left half-trained
    table = study_table(results)
    table["run"] = names  # described in the study's axis order
    return table


def study_configs_table(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The fields that vary between ``configs``, one row each (what ``dpcore study show`` prints)."""
    flats = [c.to_flat() for c in configs]
    varying = [k for k in flats[0] if len({json.dumps(f[k]) for f in flats}) > 1] if flats else []
    rows = [
        {"config_hash": c.config_hash(), **{k: f[k] for k in varying}}
        for c, f in zip(configs, flats, strict=True)
    ]
    return pd.DataFrame(rows, columns=["config_hash", *varying])
