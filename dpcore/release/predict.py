"""Predict with a saved classifier on a file of reports: CSV / JSONL / Parquet, or a corpus folder.

Output: every input row in input order, with the report ids (or row numbers), one column per label, ``1``
positive or ``0`` negative (the CheXpert convention of :mod:`dpcore.labels`; a binary classifier gives no
``-1`` uncertain values), on request each label's probability (``P(label)``), and ``status``: ``ok``, or why
the row was not predicted (``empty text``: its labels and probabilities are blank). Real exports always have
some empty sections; ``strict=True`` refuses such an input instead. Report text is never copied to the output.

>>> check_output("predictions.xlsx")
Traceback (most recent call last):
...
ValueError: file predictions.xlsx: unknown output format '.xlsx' (use .csv, .jsonl or .parquet)
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dpcore.data.schema import DataError
from dpcore.data.tables import cell_text, read_table
from dpcore.release.saved_model import (
    DEFAULT_BATCH_SIZE,
    SavedClassifier,
    load_classifier,
    read_manifest,
)

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
ROW_COLUMN = "row"  # the id of each output row when the input has no id column (1 = first row after header)
STATUS_COLUMN = "status"
OK, EMPTY = "ok", "empty text"  # a row's status: predicted, or why not


@dataclass
class Reports:
    """What prediction needs from an input: the texts and, when the input has them, the ids."""

    texts: list[str]
    ids: list[Any] | None
    id_column: str | None
    source: str
    # Each row's status: OK, or why it is not predicted (EMPTY); the model sees the OK rows only.
    status: list[str] | None = None

    @property
    def statuses(self) -> list[str]:
        return self.status if self.status is not None else [OK] * len(self.texts)

    @property
    def predictable(self) -> list[int]:
        """Indices of the rows the model reads."""
        return [i for i, s in enumerate(self.statuses) if s == OK]


def check_output(path: str | Path) -> Path:
    """Refuse an output format before the model loads, not after it has predicted."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"file {path}: unknown output format {path.suffix!r} (use .csv, .jsonl or .parquet)")
    return path


def _columns(path: Path) -> tuple[dict[str, Sequence[Any]], list[str]]:
    """The input's columns (by name) and their names, from a file or a ``save_to_disk`` folder."""
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise DataError("not a corpus folder (written by `dpcore corpus load`)", file=str(path)) from None
        if isinstance(ds, datasets.DatasetDict):  # every split, in the folder's split order
            ds = datasets.concatenate_datasets(list(ds.values()))
        return {c: ds[c] for c in ds.column_names}, list(ds.column_names)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if not path.name.lower().endswith((".csv", ".csv.gz", ".tsv", ".jsonl", ".json", ".parquet")):
        raise DataError(
            "unknown input format (use .csv, .tsv, .jsonl, .json, .parquet or a corpus folder)",
            file=str(path),
        )
    frame = read_table(path)
    return {c: frame[c].tolist() for c in frame.columns}, list(frame.columns)


def read_reports(
    path: str | Path, *, text_column: str, id_column: str | None = None, strict: bool = False
) -> Reports:
    """Texts (and ids) from ``path``; ``id_column`` None takes ``id`` when the input has one.

    Refuses an input without rows or without ``text_column``. A row with empty text gets status
    ``empty text`` (a prediction on no text would still say 0 or 1 for every label); ``strict`` refuses the
    input instead, naming the first such row.
    """
    path = Path(path)
    columns, names = _columns(path)
    if text_column not in columns:
        raise DataError(f"no such column (use --text-column); has {names}", file=str(path), field=text_column)
    if id_column is not None and id_column not in columns:
        raise DataError(f"no such id column; has {names}", file=str(path), field=id_column)
    texts = [cell_text(v) for v in columns[text_column]]
    if not texts:
        raise DataError("no reports to predict", file=str(path))
    empty = [i for i, t in enumerate(texts, start=1) if not t.strip()]
    if empty and strict:
        raise DataError(
            f"empty text ({len(empty)} of {len(texts)} rows); drop those rows or choose another "
            "--text-column",
            file=str(path),
            row=empty[0],
            field=text_column,
        )
    id_column = id_column or ("id" if "id" in columns else None)
    ids = list(columns[id_column]) if id_column else None
    status = [EMPTY if not t.strip() else OK for t in texts]
    return Reports(texts=texts, ids=ids, id_column=id_column, source=str(path), status=status)


def prediction_frame(
    reports: Reports, probs: np.ndarray, classifier: SavedClassifier, *, with_probabilities: bool = False
) -> pd.DataFrame:
    """Ids, one 1/0 column per label, on request ``P(label)`` columns, and ``status``, in the input's order.

    ``probs`` holds the predictable rows only (:attr:`Reports.predictable`, in order); the others are blank.
    """
    key = reports.id_column or ROW_COLUMN
    ids = reports.ids if reports.ids is not None else list(range(1, len(reports.texts) + 1))
    frame = pd.DataFrame({key: ids})
    rows = reports.predictable
    n_labels = len(classifier.label_names)
    labels = np.zeros((len(rows), n_labels), dtype=np.int8)
    if rows:
        labels = classifier.labels(probs)
    for j, name in enumerate(classifier.label_names):
        column = pd.Series(pd.NA, index=frame.index, dtype="Int8")
        column.iloc[rows] = labels[:, j]
        frame[name] = column
    if with_probabilities:
        for j, name in enumerate(classifier.label_names):
            column = pd.Series(np.nan, index=frame.index, dtype="float32")
            column.iloc[rows] = probs[:, j] if rows else []
            frame[f"P({name})"] = column
    frame[STATUS_COLUMN] = reports.statuses
    return frame


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def predict_file(
    model: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    text_column: str | None = None,
    id_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    with_probabilities: bool = False,
    fast: bool = True,
    progress: bool = True,
    precision: str = "auto",
    strict: bool = False,
) -> dict[str, Any]:
    """Predict every report of ``input`` with the classifier in folder ``model``; write ``output``.

    ``text_column`` None is the column the model was trained on. ``fast`` merges LoRA adapters into the
    encoder in memory and runs its linear layers through oneDNN on CPU (see :func:`load_classifier`:
    probabilities agree with the exact model to float rounding). Rows with empty text are written blank with
    their status (``strict`` refuses the input instead). Returns a summary (rows, rows predicted, rows not
    predicted by reason, seconds, reports per second).
    """

    out = check_output(output)
    manifest = read_manifest(model)  # a wrong folder fails before the input is read
    column = text_column or manifest["text_column"]
    reports = read_reports(input, text_column=column, id_column=id_column, strict=strict)
    classifier = load_classifier(model, fast=fast, precision=precision)
    texts = [reports.texts[i] for i in reports.predictable]
    t0 = time.perf_counter()
    with tqdm(total=len(texts), unit="report", disable=not progress, file=sys.stderr) as bar:
        probs = classifier.predict_proba(texts, batch_size=batch_size, progress=bar)
    seconds = time.perf_counter() - t0
    write_frame(prediction_frame(reports, probs, classifier, with_probabilities=with_probabilities), out)
    not_predicted = Counter(s for s in reports.statuses if s != OK)
    return {
        "reports": len(reports.texts),
        "predicted": len(texts),
        # Rows written blank, by the reason in their status column.
        "not_predicted": dict(sorted(not_predicted.items())),
        "output": str(out),
        "seconds": round(seconds, 3),
        "reports_per_second": round(len(texts) / seconds, 1) if seconds > 0 else None,
        "precision": classifier.precision,
    }
