"""MIMIC-CXR loader: report files (folder or zip), CheXpert/NegBio label CSV, official split file.

Layout (PhysioNet): ``files/p10/p10000032/s50414267.txt``; labels in ``mimic-cxr-2.0.0-chexpert.csv.gz``
(or ``-negbio``), columns ``subject_id, study_id`` and the 14 labels in any order; split in
``mimic-cxr-2.0.0-split.csv.gz`` (``dicom_id, study_id, subject_id, split`` with train/validate/test).

Policies, all counted in the load log (``dataset_meta(ds).extra["load"]``) and logged, never silent:

- ``missing_findings="skip"`` (default) leaves out reports without a FINDINGS section (about a fifth of
  MIMIC-CXR); ``"impression"`` uses the impression as the Findings instead; ``"error"`` raises.
- A report with no row in the label file is left out when a label file is given; empty report files are
  left out; a study missing from the split file is left out of the split result.
- Non-UTF-8 report files, bad label values, missing columns and duplicate studies (both places named)
  raise :class:`~dpcore.data.schema.DataError` naming the file, the row and the field; so does a load that
  keeps no report (no report files, or every one left out).

MIMIC-CXR is credentialed: the result is flagged ``credentialed=True``; never print or share its text.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import datasets

from dpcore.data.schema import DataError, LoadLog, make_dataset
from dpcore.data.sections import extract_findings_impression
from dpcore.data.splits import check_no_patient_leak
from dpcore.data.tables import parse_label, read_table
from dpcore.labels import CHEXPERT

log = logging.getLogger("dpcore.data")

MissingFindings = Literal["skip", "impression", "error"]
_REPORT_PATH = re.compile(r"(?:^|/)p(\d+)/s(\d+)\.txt$")
_SPLIT_NAMES = {"train": "train", "validate": "validation", "validation": "validation", "test": "test"}


def _iter_reports(reports: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """``(where, subject_id, study_id, raw bytes)`` for every report file in a folder or zip."""
    if not reports.exists():
        raise DataError("report folder or zip not found", file=str(reports))
    if reports.is_file():
        if not zipfile.is_zipfile(reports):
            raise DataError("not a zip file nor a folder of reports", file=str(reports))
        with zipfile.ZipFile(reports) as zf:
            for name in sorted(zf.namelist()):
                m = _REPORT_PATH.search(name)
                if m:
                    yield f"{reports}:{name}", m.group(1), m.group(2), zf.read(name)
        return
    for path in sorted(reports.rglob("s*.txt")):
        m = _REPORT_PATH.search(path.as_posix())
        if m:
            yield str(path), m.group(1), m.group(2), path.read_bytes()


def _read_labels(path: Path) -> dict[str, list[int | None]]:
    df = read_table(path, required=("subject_id", "study_id", *CHEXPERT.labels))
    out: dict[str, list[int | None]] = {}
    first: dict[str, int] = {}
    for i, row in enumerate(df.itertuples(index=False), start=1):
        rec = dict(zip(df.columns, row, strict=True))
        study = str(rec["study_id"]).strip()
        if not study.isdigit():
            raise DataError(f"study_id {study!r} is not a number", file=str(path), row=i, field="study_id")
        if study in first:
            raise DataError(
                f"duplicate study_id {study} (first at row {first[study]})",
                file=str(path),
                row=i,
                field="study_id",
            )
        first[study] = i
        out[study] = [parse_label(rec[lab], file=str(path), row=i, field=lab) for lab in CHEXPERT.labels]
    return out


def _read_split(path: Path) -> dict[str, str]:
    df = read_table(path, required=("study_id", "subject_id", "split"))
    out: dict[str, str] = {}
    for i, (study, split) in enumerate(zip(df["study_id"], df["split"], strict=True), start=1):
        name = _SPLIT_NAMES.get(str(split).strip().lower())
        if name is None:
            raise DataError(
                f"unknown split {split!r} (train, validate, test)", file=str(path), row=i, field="split"
            )
        study = str(study).strip()
        if out.setdefault(study, name) != name:  # one row per DICOM: all images of a study agree
            raise DataError(
                f"study {study} is in {out[study]!r} and {name!r}", file=str(path), row=i, field="split"
            )
    return out


def load_mimic_cxr(
    *,
    reports: str | Path,
    labels: str | Path | None = None,
    split: str | Path | None = None,
    missing_findings: MissingFindings = "skip",
    source: str = "mimic-cxr",
) -> datasets.Dataset | datasets.DatasetDict:
    """MIMIC-CXR reports in the common schema (a ``DatasetDict`` by the official split when ``split``
    is given). ``labels`` is the chexpert or negbio CSV (``.csv`` or ``.csv.gz``); without it every label
    is ``None`` (for a teacher to fill in).
    """
    if missing_findings not in ("skip", "impression", "error"):
        raise ValueError(
            f"missing_findings must be 'skip', 'impression' or 'error', got {missing_findings!r}"
        )
    label_map = _read_labels(Path(labels)) if labels is not None else None
    split_map = _read_split(Path(split)) if split is not None else None
    lg = LoadLog(source)
    cols: dict[str, list] = {c: [] for c in ("id", "patient_id", "findings", "impression", "text", "labels")}
    seen: dict[str, str] = {}
    for where, subject, study, raw in _iter_reports(Path(reports)):
        if study in seen:
            raise DataError(f"duplicate study s{study} (also {seen[study]})", file=where, field="study_id")
        seen[study] = where
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"not UTF-8 text ({e.reason} at byte {e.start})", file=where, field="text"
            ) from None
        if not text.strip():
            lg.skip("empty report", file=where)
            continue
        findings, impression = extract_findings_impression(text)
        if not findings:
            if missing_findings == "error":
                raise DataError("report has no FINDINGS section", file=where, field="findings")
            if missing_findings == "skip" or not impression:
                lg.skip("no FINDINGS section", file=where)
                continue
            findings = impression
            lg.skipped["impression used as findings (kept)"] += 1
        if label_map is not None:
            if study not in label_map:
                lg.skip("no row in the label file", file=where)
                continue
            row_labels = label_map[study]
        else:
            row_labels = [None] * len(CHEXPERT)
        if split_map is not None and study not in split_map:
            lg.skip("study not in the split file", file=where)
            continue
        cols["id"].append(f"s{study}")
        cols["patient_id"].append(f"p{subject}")
        cols["findings"].append(findings)
        cols["impression"].append(impression)
        cols["text"].append(text)
        cols["labels"].append(row_labels)
    kept_note = lg.skipped.pop("impression used as findings (kept)", 0)
    lg.kept = len(cols["id"])
    lg.check_kept(
        file=str(reports), read=len(seen), unit="report files like files/p10/p10000032/s50414267.txt"
    )
    if label_map is not None:
        orphan = len(set(label_map) - set(seen))
        if orphan:
            log.info("%s: %d label rows have no report file", source, orphan)
    extra = {
        "load": {
            **lg.as_dict(),
            "impression_as_findings": kept_note,
            "policy": {"missing_findings": missing_findings},
        }
    }
    log.info(lg.summary())
    ds = make_dataset(
        cols, label_set="chexpert", source=source, credentialed=True, extra=extra, file=str(reports)
    )
    if split_map is None:
        return ds
    which = [split_map[i[1:]] for i in ds["id"]]
    dd = datasets.DatasetDict(
        {
            name: ds.select([k for k, w in enumerate(which) if w == name])
            for name in ("train", "validation", "test")
        }
    )
    check_no_patient_leak(dd)
    return dd
