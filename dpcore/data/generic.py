"""Any CSV / JSONL / Parquet of reports: a named text column and label columns; Indiana and CheXpert
labeler output as presets.

Label columns are matched to the label set by name: ``label_columns`` maps each label to a column (labels
left out are ``None``), or, when it is ``None``, columns named exactly like the labels are used. Rows with
empty text are left out and counted (``missing_text="skip"``) or raise (``"error"``); duplicate ids, bad
label values and missing columns raise :class:`~dpcore.data.schema.DataError` naming file, row and field,
and so does a table that yields no report (a header without rows, or every row left out).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
>>> _ = p.write_text("report,Edema\\nMild edema.,1\\n,0\\n", encoding="utf-8")
>>> ds = load_table(p, text_column="report")
>>> len(ds), ds[0]["labels"][5], dataset_meta(ds).extra["load"]["skipped"]
(1, 1, {'empty text': 1})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import datasets

from dpcore.data.schema import DataError, LoadLog, dataset_meta, make_dataset
from dpcore.data.tables import cell_text, parse_label, read_table
from dpcore.labels import get_label_set

__all__ = ["load_table", "load_indiana", "load_chexpert_labeled", "dataset_meta"]

log = logging.getLogger("dpcore.data")


def load_table(
    path: str | Path,
    *,
    text_column: str,
    label_set: str = "chexpert",
    label_columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    patient_column: str | None = None,
    impression_column: str | None = None,
    full_text_columns: tuple[str, ...] = (),
    missing_text: Literal["skip", "error"] = "skip",
    source: str | None = None,
    credentialed: bool = False,
) -> datasets.Dataset:
    """Reports from one table. ``text_column`` is the Findings; ``text`` is the Findings and
    ``impression_column`` (plus any ``full_text_columns``) joined with section headers. Without
    ``id_column`` the id is the row number; without ``patient_column`` each report is its own patient.
    """
    if missing_text not in ("skip", "error"):
        raise ValueError(f"missing_text must be 'skip' or 'error', got {missing_text!r}")
    lset = get_label_set(label_set)
    file = str(path)
    df = read_table(path)
    if label_columns is None:
        label_columns = {lab: lab for lab in lset.labels if lab in df.columns}
    unknown = [lab for lab in label_columns if lab not in lset.labels]
    if unknown:
        raise ValueError(f"{unknown} are not labels of the {label_set} label set")
    wanted = [text_column, *label_columns.values(), *full_text_columns]
    wanted += [c for c in (id_column, patient_column, impression_column) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing}; has {list(df.columns)}", file=file)

    lg = LoadLog(source or Path(path).name)
    cols: dict[str, list] = {c: [] for c in ("id", "patient_id", "findings", "impression", "text", "labels")}
    seen: dict[str, int] = {}
    for i, rec in enumerate(df.to_dict("records"), start=1):
        rid = cell_text(rec[id_column]).strip() if id_column else str(i)
        if not rid:
            raise DataError("empty id", file=file, row=i, field=id_column)
        if rid in seen:
            raise DataError(
                f"duplicate id {rid!r} (first at row {seen[rid]})", file=file, row=i, field=id_column or "id"
            )
        seen[rid] = i
        findings = " ".join(cell_text(rec[text_column]).split())
        if not findings:
            if missing_text == "error":
                raise DataError("empty text", file=file, row=i, field=text_column)
            lg.skip("empty text", file=file, row=i)
            continue
        impression = " ".join(cell_text(rec[impression_column]).split()) if impression_column else ""
        parts = [f"{c.upper()}: {' '.join(cell_text(rec[c]).split())}" for c in full_text_columns]
        parts.append(f"FINDINGS: {findings}")
        if impression_column:
            parts.append(f"IMPRESSION: {impression}")
        labels = [
            parse_label(rec[label_columns[lab]], file=file, row=i, field=label_columns[lab])
            if lab in label_columns
            else None
            for lab in lset.labels
        ]
        cols["id"].append(rid)
        cols["patient_id"].append(cell_text(rec[patient_column]).strip() if patient_column else rid)
        cols["findings"].append(findings)
        cols["impression"].append(impression)
        cols["text"].append("\n".join(parts))
        cols["labels"].append(labels)
    lg.kept = len(cols["id"])
    log.info(lg.summary())
    lg.check_kept(file=file, read=len(df))
    extra = {"load": {**lg.as_dict(), "label_columns": dict(label_columns)}}
    return make_dataset(
        cols, label_set=label_set, source=source or "table", credentialed=credentialed, extra=extra, file=file
    )


def load_indiana(path: str | Path, *, missing_text: Literal["skip", "error"] = "skip") -> datasets.Dataset:
    """The Indiana University (Open-i) ``indiana_reports.csv``: Findings from ``findings``, id ``uid``.

    The collection ships MeSH terms, not CheXpert labels, so every label is ``None`` (a teacher labels
    them). Empty findings are common there and are left out and counted. De-identified words are ``XXXX``.
    """
    return load_table(
        path,
        text_column="findings",
        id_column="uid",
        impression_column="impression",
        full_text_columns=("indication", "comparison"),
        label_columns={},
        missing_text=missing_text,
        source="indiana",
    )


def load_chexpert_labeled(path: str | Path) -> datasets.Dataset:
    """CheXpert labeler output (``labeled_reports.csv``): column ``Reports`` and the 14 labels."""
    return load_table(path, text_column="Reports", label_set="chexpert", source="chexpert-labeler")
