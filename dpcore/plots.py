"""One figure style for the whole book, the names of the runs a study table holds, and the glue helpers.

Chapters draw from the tidy study table (:func:`dpcore.study.study_table`); this module names each row's
*series* (what kind of training it was) the same way everywhere, draws the figures that more than one
chapter needs, and glues values and tables into the prose (:func:`glue_value`, :func:`glue_table`) the same
way in every chapter. myst_nb and IPython are imported lazily: the library itself does not need them.

>>> import pandas as pd
>>> rows = pd.DataFrame({"mode": ["lora", "dp-lora", "dp-lora", "lora"], "warm_start": [None, None, "synthetic", None],
...                      "trainable_layers": [1, 1, 1, 0]})
>>> series(rows).tolist()
['LoRA', 'DP-LoRA', 'DP-LoRA, public warm start', 'head alone']
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import seaborn as sns

# Series names, in the order legends list them.
LORA, FULL, DP_LORA, DP_WARM = "LoRA", "full fine-tuning", "DP-LoRA", "DP-LoRA, public warm start"
HEAD, DP_HEAD, DP_FULL = "head alone", "DP, head alone", "DP full fine-tuning"
# DP-LoRA whose unit of privacy is the patient (every other series protects one report).
DP_PATIENT = "DP-LoRA, patient unit"
SERIES_ORDER = [FULL, LORA, HEAD, DP_LORA, DP_WARM, DP_PATIENT, DP_HEAD, DP_FULL]
PRIVATE_SERIES = [DP_LORA, DP_WARM, DP_PATIENT, DP_HEAD, DP_FULL]
CORPUS_NAMES = {
    "synthetic-cxr": "chest X-ray (synthetic)",
    "synthetic-ct": "chest CT (synthetic)",
    "disk": "disk",
}


def _series(mode: str, warm_start: Any, trainable_layers: Any, unit: Any = "report") -> str:
    if unit == "patient":
        return DP_PATIENT
    head_only = trainable_layers is not None and not _missing(trainable_layers) and int(trainable_layers) == 0
    if mode in ("lora", "full"):
        return HEAD if head_only else (LORA if mode == "lora" else FULL)
    if head_only:
        return DP_HEAD
    if mode == "dp-full":
        return DP_FULL
    return DP_WARM if isinstance(warm_start, str) and warm_start else DP_LORA


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def series(table: pd.DataFrame) -> pd.Series:
    """The series of each run: LoRA, full fine-tuning, DP-LoRA, DP-LoRA after a public warm start, DP-LoRA
    at the patient unit, and the head-alone references."""
    warm = table["warm_start"] if "warm_start" in table else pd.Series([None] * len(table), index=table.index)
    layers = (
        table["trainable_layers"]
        if "trainable_layers" in table
        else pd.Series([None] * len(table), index=table.index)
    )
    units = (
        table["privacy_unit"]
        if "privacy_unit" in table
        else pd.Series(["report"] * len(table), index=table.index)
    )
    return pd.Series(
        [_series(m, w, t, u) for m, w, t, u in zip(table["mode"], warm, layers, units, strict=True)],
        index=table.index,
        name="series",
    )


def corpus_name(table: pd.DataFrame) -> pd.Series:
    """A reader's name for each run's corpus (``disk`` corpora by their label set)."""
    names = {"chexpert": "chest X-ray", "ctrate": "chest CT"}
    return pd.Series(
        [
            CORPUS_NAMES.get(c, c) if c != "disk" else names.get(ls, ls)
            for c, ls in zip(table["corpus"], table["label_set"], strict=True)
        ],
        index=table.index,
        name="corpus_name",
    )


def set_style() -> None:
    """The book's style: seaborn's whitegrid theme, a colour-blind palette, compact fonts."""

    sns.set_theme(style="whitegrid", palette="colorblind", font_scale=0.9)


def palette() -> dict[str, Any]:
    """One colour per series, the same in every figure."""

    colours = sns.color_palette("colorblind", len(SERIES_ORDER))
    return dict(zip(SERIES_ORDER, colours, strict=True))


def f1_vs_epsilon(
    ax: Any, table: pd.DataFrame, *, metric: str = "weighted_f1", title: str | None = None
) -> None:
    """Weighted F1 against epsilon (log axis) for the private series, with 95% intervals; the non-private
    runs as horizontal reference lines with their interval as a band. ``table`` holds one corpus."""
    colours = palette()
    table = table.assign(series=series(table))
    private = table[table["series"].isin(PRIVATE_SERIES)].sort_values("target_epsilon")
    for name, rows in private.groupby("series", sort=False):
        if rows["target_epsilon"].isna().all():
            continue
        lo, hi = rows[f"{metric}_lo"], rows[f"{metric}_hi"]
        err = [(rows[metric] - lo).clip(lower=0).fillna(0), (hi - rows[metric]).clip(lower=0).fillna(0)]
        ax.errorbar(
            rows["target_epsilon"],
            rows[metric],
            yerr=err,
            marker="o",
            capsize=3,
            label=name,
            color=colours[name],
        )
    for name, rows in table[~table["series"].isin(PRIVATE_SERIES)].groupby("series", sort=False):
        row = rows.iloc[0]
        ax.axhline(row[metric], color=colours[name], linestyle="--", linewidth=1.2, label=f"{name} (no DP)")
        if not _missing(row[f"{metric}_lo"]):
            ax.axhspan(row[f"{metric}_lo"], row[f"{metric}_hi"], color=colours[name], alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("privacy budget ε (log scale)")
    ax.set_ylabel(metric.replace("_", " ").replace("f1", "F1"))
    ax.set_ylim(0, 1.02)
    if title:
        ax.set_title(title)


def legend_below(fig: Any, axes: Any, *, ncol: int = 3) -> None:
    """One legend for the whole figure, below the axes, so it never covers data."""
    handles, labels = [], []
    for ax in [axes] if not hasattr(axes, "__iter__") else list(axes):
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(labels) // (ncol + 1)), 1, 1))


# ---- glued values and tables: every number in the prose comes from an executed cell ----

# Padded cells, numbers that do not wrap, and a container that scrolls sideways instead of widening the page.
TABLE_STYLE = (
    "<style>.dp-table th, .dp-table td {font-size: 0.85em; padding: 0.25em 0.6em} "
    ".dp-table td {white-space: nowrap} .dp-table.dp-wrap td {white-space: normal; min-width: 6em} "
    ".dp-table.dp-wrap th, .dp-table.dp-wrap td {text-align: left}</style>"
)


class Plain(str):
    """A string that glues without quotes."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _glue(name: str, value: Any) -> None:
    from myst_nb import glue

    glue(name, value, display=False)


def glue_value(name: str, value: Any) -> None:
    """Glue a plain Python value (the strict build refuses numpy and torch scalars)."""
    _glue(name, value.item() if hasattr(value, "item") else value)


def glue_all(**values: Any) -> None:
    """:func:`glue_value` for each keyword."""
    for name, value in values.items():
        glue_value(name, value)


def table_html(frame: pd.DataFrame, float_format: str = "{:.3f}", *, wrap: bool = False) -> str:
    """A table as HTML with padded cells, in a container that scrolls sideways inside the page. Cells keep
    to one line unless ``wrap`` (for columns of sentences).

    >>> "padding" in table_html(pd.DataFrame({"a": [0.12345]})) and "0.123" in table_html(pd.DataFrame({"a": [0.12345]}))
    True
    """
    html = frame.to_html(na_rep="", float_format=float_format.format, classes="dataframe", escape=True)
    classes = "dp-table dp-wrap" if wrap else "dp-table"
    return f'{TABLE_STYLE}<div class="{classes}" style="overflow-x: auto">{html}</div>'


def glue_table(name: str, frame: pd.DataFrame, float_format: str = "{:.3f}", *, wrap: bool = False) -> None:
    """Glue :func:`table_html` of ``frame`` (shown with ``glue:figure``)."""
    from IPython.display import HTML

    _glue(name, HTML(table_html(frame, float_format, wrap=wrap)))


def with_interval(value: float, lo: float, hi: float, digits: int = 3) -> str:
    """A value with its 95% interval in brackets, or the value alone where there is no interval.

    >>> with_interval(0.5, 0.4, 0.61), with_interval(0.5, float("nan"), float("nan"), digits=2)
    ('0.500 [0.400, 0.610]', '0.50')
    """
    if lo is None or _missing(lo) or hi is None or _missing(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
