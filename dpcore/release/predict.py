"""Predict with a saved classifier on a file of reports: CSV / JSONL / Parquet, or a corpus folder.

Output: the report ids (or row numbers) and one column per label, ``1`` positive or ``0`` negative (the
CheXpert convention of :mod:`dpcore.labels`; a binary classifier gives no ``-1`` uncertain or blank values),
and on request each label's probability (``P(label)``). Report text is never copied to the output.

>>> check_output("predictions.xlsx")
Traceback (most recent call last):
...
ValueError: file predictions.xlsx: unknown output format '.xlsx' (use .csv, .jsonl or .parquet)
"""

from __future__ import annotations

import sys
import time
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
    probabilities,
    read_manifest,
)

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
ROW_COLUMN = "row"  # the id of each output row when the input has no id column (1 = first row after header)


@dataclass
class Reports:
    """What prediction needs from an input: the texts and, when the input has them, the ids."""

    texts: list[str]
    ids: list[Any] | None
    id_column: str | None
    source: str


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


def read_reports(path: str | Path, *, text_column: str, id_column: str | None = None) -> Reports:
    """Texts (and ids) from ``path``; ``id_column`` None takes ``id`` when the input has one.

    Refuses an input without rows, without ``text_column``, or with an empty text (naming the first such
    row): a prediction on no text would still say 0 or 1 for every label.
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
    if empty:
        raise DataError(
            f"empty text ({len(empty)} of {len(texts)} rows); drop those rows or choose another "
            "--text-column",
            file=str(path),
            row=empty[0],
            field=text_column,
        )
    id_column = id_column or ("id" if "id" in columns else None)
    ids = list(columns[id_column]) if id_column else None
    return Reports(texts=texts, ids=ids, id_column=id_column, source=str(path))


def prediction_frame(
    reports: Reports, probs: np.ndarray, classifier: SavedClassifier, *, with_probabilities: bool = False
) -> pd.DataFrame:
    """Ids, one 1/0 column per label and, on request, ``P(label)`` columns, in the input's order."""
    key = reports.id_column or ROW_COLUMN
    ids = reports.ids if reports.ids is not None else list(range(1, len(reports.texts) + 1))
    frame = pd.DataFrame({key: ids})
    labels = classifier.labels(probs)
    for j, name in enumerate(classifier.label_names):
        frame[name] = labels[:, j]
    if with_probabilities:
        for j, name in enumerate(classifier.label_names):
            frame[f"P({name})"] = probs[:, j]
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
) -> dict[str, Any]:
    """Predict every report of ``input`` with the classifier in folder ``model``; write ``output``.

    ``text_column`` None is the column the model was trained on. ``fast`` merges LoRA adapters into the
    encoder in memory and runs its linear layers through oneDNN on CPU (see :func:`load_classifier`:
    probabilities agree with the exact model to float rounding). Returns a summary (counts, seconds,
    reports per second).
    """

    out = check_output(output)
    manifest = read_manifest(model)  # a wrong folder fails before the input is read
    column = text_column or manifest["text_column"]
    reports = read_reports(input, text_column=column, id_column=id_column)
    classifier = load_classifier(model, fast=fast, precision=precision)
    t0 = time.perf_counter()
    with tqdm(total=len(reports.texts), unit="report", disable=not progress, file=sys.stderr) as bar:
        probs = probabilities(
            classifier.model,
            classifier.tokenizer,
            reports.texts,
            max_length=classifier.max_length,
            batch_size=batch_size,
            progress=bar,
            precision=classifier.precision,
        )
    seconds = time.perf_counter() - t0
    write_frame(prediction_frame(reports, probs, classifier, with_probabilities=with_probabilities), out)
    return {
        "reports": len(reports.texts),
        "output": str(out),
        "seconds": round(seconds, 3),
        "reports_per_second": round(len(reports.texts) / seconds, 1) if seconds > 0 else None,
        "precision": classifier.precision,
    }
