"""Tables of study results: one tidy row per run, per-label long form, means over seeds, CSV.

>>> describe([{"mode": "lora", "epsilon": None}, {"mode": "dp-lora", "epsilon": 1.0}])
['mode=lora', 'mode=dp-lora epsilon=1.0']
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dpcore.config import MODE_DEFAULTS
from dpcore.training import RunResult

F1_FAMILY = ("weighted", "micro", "macro")
METRICS = tuple(f"{m}_f1" for m in F1_FAMILY)
COLUMNS = [
    "config_hash",
    "run",
    "corpus",
    "label_set",
    "model",
    "num_layers",
    "max_length",
    "trainable_layers",
    "mode",
    "warm_start",
    "privacy_unit",
    "target_epsilon",
    "epsilon_rdp",
    "epsilon_prv",
    "delta",
    "noise_multiplier",
    "seed",
    "n_train",
    *(f"{m}{suffix}" for m in METRICS for suffix in ("", "_lo", "_hi")),
    "macro_auroc",
    "val_weighted_f1",
    "public_only_weighted_f1",
    "feature_seconds",
    "train_seconds",
    "peak_memory_mb",
    "epochs",
    "batch_size",
    "learning_rate",
    "head_learning_rate",
    "precision",
]
# The columns that identify a run (the rest are measurements); per_label_long keeps these.
ID_COLUMNS = ["config_hash", "run", "corpus", "label_set", "model", "num_layers", "max_length", "mode"]
ID_COLUMNS += ["target_epsilon", "seed"]
# Config fields the columns above already show (under these names or as what the run measured).
_SHOWN = {"corpus", "label_set", "model", "num_layers", "max_length", "mode", "epsilon", "delta"}
_SHOWN |= {"trainable_layers", "warm_start", "privacy_unit"}
_SHOWN |= {"noise_multiplier", "seed", "epochs", "batch_size", "learning_rate", "head_learning_rate"}
_SHOWN |= {"precision"}
LABEL_PREFIX = "f1:"


def _value(value: Any) -> Any:
    """Lists (``lora_targets``) as one comma-joined string: hashable, and one CSV cell."""
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else value


def _varying(flats: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def describe(flats: Sequence[Mapping[str, Any]], *, order: Sequence[str] = ()) -> list[str]:
    """A short name for each run: ``key=value`` for the flat parameters that vary between ``flats``
    (None values left out; keys in ``order`` first); ``mode=...`` when nothing varies."""
    varying = _varying(flats)
    keys = [k for k in order if k in varying] + [k for k in varying if k not in order] or ["mode"]
    return [" ".join(f"{k}={_value(f[k])}" for k in keys if f.get(k) is not None) for f in flats]


_NO_REFERENCE: dict[str, Any] = {
    "f1": {**dict.fromkeys(F1_FAMILY), "per_label": {}},
    "auroc": {"macro": None},
}


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _flat(config: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {k: v for section in config.values() for k, v in section.items()}


def _row(result: RunResult) -> dict[str, Any]:
    flat = _flat(result.config)
    # A corpus without reference labels has no metrics against them: NaN in the table, never 0.
    ref = result.metrics.get("test_vs_reference") or _NO_REFERENCE
    ci = ref.get("f1_ci") or {}
    privacy = result.privacy
    schedule = {**MODE_DEFAULTS.get(flat["mode"], {}), **{k: v for k, v in flat.items() if v is not None}}
    schedule.update(result.extra.get("schedule") or {})
    row: dict[str, Any] = {
        "config_hash": result.config_hash,
        **{k: flat.get(k) for k in ("corpus", "label_set", "model", "num_layers", "max_length")},
        "trainable_layers": flat.get("trainable_layers"),
        "mode": flat.get("mode"),
        "warm_start": flat.get("warm_start"),
        "privacy_unit": flat.get("privacy_unit", "report"),
        "target_epsilon": _num(privacy.target_epsilon if privacy else None),
        "epsilon_rdp": _num(privacy.epsilon_rdp if privacy else None),
        "epsilon_prv": _num(privacy.epsilon_prv if privacy else None),
        "delta": _num(privacy.delta if privacy else None),
        "noise_multiplier": _num(privacy.noise_multiplier if privacy else None),
        "seed": flat.get("seed"),
        "n_train": result.data.get("train"),
    }
    for name in F1_FAMILY:
        lo, hi = ci.get(name) or (None, None)
        f1 = _num(ref["f1"][name])
        row.update({f"{name}_f1": f1, f"{name}_f1_lo": _num(lo), f"{name}_f1_hi": _num(hi)})
    row.update(
        macro_auroc=_num(ref["auroc"]["macro"]),
        # Against the teacher on the validation split: what schedules are chosen on (outside ε).
        val_weighted_f1=_num(result.validation_weighted_f1),
        # What the public warm start alone scores on this run's test split (the private run must beat it).
        public_only_weighted_f1=_num(
            ((result.extra.get("warm_start") or {}).get("test_vs_reference") or {})
            .get("f1", {})
            .get("weighted")
        ),
        feature_seconds=result.timings.get("feature_seconds", 0.0),
        train_seconds=result.timings.get("train_seconds"),
        peak_memory_mb=result.peak_memory_mb,
        epochs=schedule.get("epochs"),
        batch_size=schedule.get("batch_size"),
        learning_rate=schedule.get("learning_rate"),
        head_learning_rate=schedule.get("head_learning_rate"),
        precision=result.extra.get("precision", "float32"),
    )
    row.update({LABEL_PREFIX + k: v for k, v in ref["f1"]["per_label"].items()})
    return row


def study_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run (in the order given): identity, privacy, the F1 family with bootstrap intervals
    (NaN where the result has none), AUROC, cost, schedule; then any other config field that varies
    between the results; then per-label F1 as ``f1:<label>`` (NaN for labels outside a run's label set).
    Non-private runs have NaN epsilons."""
    flats = [_flat(r.config) for r in results]
    extra = [k for k in _varying(flats) if k not in _SHOWN]
    rows = [_row(r) for r in results]
    names = describe(flats)
    for row, flat, name in zip(rows, flats, names, strict=True):
        row["run"] = name
        row.update({k: _value(flat.get(k)) for k in extra})
    labels = list(dict.fromkeys(k for row in rows for k in row if k.startswith(LABEL_PREFIX)))
    return pd.DataFrame(rows, columns=[*COLUMNS, *extra, *labels])


def per_label_long(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run and label (``label``, ``f1`` and the run's identifying columns), for heatmaps."""
    labels = [c for c in table.columns if c.startswith(LABEL_PREFIX)]
    known = set(COLUMNS) | set(labels)
    ids = [c for c in ID_COLUMNS if c in table.columns] + [c for c in table.columns if c not in known]
    long = table.melt(id_vars=ids, value_vars=labels, var_name="label", value_name="f1")
    long["label"] = long["label"].str.removeprefix(LABEL_PREFIX)
    return long.dropna(subset=["f1"]).reset_index(drop=True)


def aggregate_seeds(table: pd.DataFrame, *, by: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean weighted / micro / macro F1 per group of ``by`` (the rows of a group being its seeds), with a
    t-interval over seeds, or the run's own bootstrap interval where a group has one run (``interval``
    says which); ``n_seeds`` counts the rows."""

    missing = [c for c in by if c not in table.columns]
    if missing:
        raise ValueError(f"aggregate_seeds: no column {missing[0]!r} in the table")
    rows = []
    for keys, group in table.groupby(list(by), dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        n = len(group)
        row["n_seeds"] = n
        for m in METRICS:
            values = group[m].to_numpy(dtype=float)
            mean = float(values.mean())
            if n > 1:
                half = stats.t.ppf((1 + level) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
                lo, hi = mean - half, mean + half
            else:
                lo, hi = float(group[f"{m}_lo"].iloc[0]), float(group[f"{m}_hi"].iloc[0])
            row.update({m: mean, f"{m}_lo": float(lo), f"{m}_hi": float(hi)})
        row["interval"] = "t over seeds" if n > 1 else "bootstrap"
        rows.append(row)
    columns = [*by, "n_seeds", *(f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")), "interval"]
    return pd.DataFrame(rows, columns=columns)


def paired_interval(differences: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of paired differences (one per seed, e.g. a run's F1 minus its own baseline's) and its
    t-interval; the interval is NaN with a single pair.

    >>> mean, lo, hi = paired_interval([0.02, 0.04, 0.03])
    >>> round(mean, 3), round(lo, 3), round(hi, 3)
    (0.03, 0.005, 0.055)
    """
    values = np.asarray(differences, dtype=float)
    if values.size == 0:
        raise ValueError("paired_interval: no differences")
    mean = float(values.mean())
    if values.size == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half


def spearman_interval(
    x: Sequence[float], y: Sequence[float], *, level: float = 0.95
) -> tuple[float, float, float]:
    """Spearman's rho of ``x`` and ``y`` with its interval by Fisher's z and the Fieller-Hartley-Pearson
    variance 1.06 / (n - 3); the interval is NaN with fewer than four pairs or |rho| = 1, rho NaN without
    variation to rank.

    >>> rho, lo, hi = spearman_interval([1, 2, 3, 4, 5, 6, 7, 8], [2, 1, 4, 3, 6, 5, 8, 7])
    >>> round(rho, 3), round(lo, 3), round(hi, 3)
    (0.905, 0.534, 0.984)
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 3 or len(np.unique(xs)) < 2 or len(np.unique(ys)) < 2:
        return math.nan, math.nan, math.nan
    rho = float(stats.spearmanr(xs, ys).statistic)
    if len(xs) < 4 or abs(rho) >= 1:
        return rho, math.nan, math.nan
    half = float(stats.norm.ppf((1 + level) / 2)) * math.sqrt(1.06 / (len(xs) - 3))
    return rho, math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as CSV (per-label columns included); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
