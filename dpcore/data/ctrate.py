"""CT-RATE loader: reports CSV + predicted-labels CSV joined on ``VolumeName``, from disk or the hub cache.

Files (Hugging Face ``ibrahimhamamci/CT-RATE``, gated):
``dataset/radiology_text_reports/{train,validation}_reports.csv``
(``VolumeName, ClinicalInformation_EN, Technique_EN, Findings_EN, Impressions_EN``) and
``dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv`` (``VolumeName`` + 18 labels, 0/1).
``VolumeName`` is ``train_1_a_1.nii.gz``: patient ``train_1``, scan ``a``, reconstruction ``1``; the
result's ``id`` is the VolumeName without ``.nii.gz`` and ``patient_id`` the patient, so
:func:`~dpcore.data.split_by_patient` keeps all scans of a patient together.

Policies (counted in ``dataset_meta(ds).extra["load"]``): reports with empty Findings are left out
(``missing_findings="skip"``) or raise (``"error"``); reports without a label row are left out; label
rows without a report are counted. Bad label values, duplicate volumes (both rows named) and missing
columns raise :class:`~dpcore.data.schema.DataError` naming the file, the row and the field; so does a load
that keeps no report.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import datasets
import pandas as pd

from dpcore.data.schema import DataError, LoadLog, make_dataset
from dpcore.data.tables import cell_text, parse_label, read_table
from dpcore.labels import CTRATE

log = logging.getLogger("dpcore.data")

REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
HUB_ID = "ibrahimhamamci/CT-RATE"
_VOLUME = re.compile(r"^([A-Za-z]+_\d+)_([a-z]+)_(\d+)(?:\.nii(?:\.gz)?)?$")
_REPORT_FILES = (
    "dataset/radiology_text_reports/train_reports.csv",
    "dataset/radiology_text_reports/validation_reports.csv",
)
_LABEL_FILES = (
    "dataset/multi_abnormality_labels/train_predicted_labels.csv",
    "dataset/multi_abnormality_labels/valid_predicted_labels.csv",
)


def _volume_parts(name: str, *, file: str, row: int) -> tuple[str, str]:
    m = _VOLUME.match(name.strip())
    if not m:
        raise DataError(
            f"VolumeName {name!r} is not like 'train_1_a_1.nii.gz'", file=file, row=row, field="VolumeName"
        )
    return f"{m.group(1)}_{m.group(2)}_{m.group(3)}", m.group(1)


def _refuse_duplicate(vid: str, seen: dict[str, tuple[str, int]], *, file: str, row: int) -> None:
    """Record where ``vid`` is; a second row of it (in any of the files) names both rows."""
    if vid in seen:
        first_file, first_row = seen[vid]
        where = f"row {first_row}" if first_file == file else f"file {first_file}, row {first_row}"
        raise DataError(
            f"duplicate VolumeName {vid} (first at {where})", file=file, row=row, field="VolumeName"
        )
    seen[vid] = (file, row)


def _frames_from_root(root: Path) -> tuple[list[tuple[str, pd.DataFrame]], list[tuple[str, pd.DataFrame]]]:
    reports = [
        (str(root / f), read_table(root / f, required=REPORT_COLUMNS))
        for f in _REPORT_FILES
        if (root / f).exists()
    ]
    labels = [
        (str(root / f), read_table(root / f, required=("VolumeName", *CTRATE.labels)))
        for f in _LABEL_FILES
        if (root / f).exists()
    ]
    if not reports:
        raise DataError(
            f"no report CSV found under the CT-RATE folder (expected {_REPORT_FILES[0]})", file=str(root)
        )
    return reports, labels


def _frames_from_hub(hub_id: str, cache_dir: str | None) -> tuple[list, list]:
    reports, labels = [], []
    for config, out in (("reports", reports), ("labels", labels)):
        dd = datasets.load_dataset(hub_id, config, cache_dir=cache_dir)
        for split, d in dd.items():
            out.append((f"{hub_id}:{config}/{split}", d.to_pandas()))
    return reports, labels


def load_ct_rate(
    *,
    root: str | Path | None = None,
    reports: Sequence[str | Path] = (),
    labels: Sequence[str | Path] = (),
    from_hub: bool = False,
    hub_id: str = HUB_ID,
    cache_dir: str | None = None,
    missing_findings: Literal["skip", "error"] = "skip",
    source: str = "ct-rate",
) -> datasets.Dataset:
    """CT-RATE reports and labels in the common schema (one Dataset; split it with ``split_by_patient``).

    Give the local ``root`` folder (which holds ``dataset/``), or the ``reports`` and ``labels`` CSV
    files, or ``from_hub=True`` to read through ``datasets`` (works offline from a hub cache). Without
    label files every label is ``None``.
    """
    if missing_findings not in ("skip", "error"):
        raise ValueError(f"missing_findings must be 'skip' or 'error', got {missing_findings!r}")
    if from_hub:
        report_frames, label_frames = _frames_from_hub(hub_id, cache_dir)
    elif root is not None:
        report_frames, label_frames = _frames_from_root(Path(root))
    elif reports:
        report_frames = [(str(p), read_table(p, required=REPORT_COLUMNS)) for p in reports]
        label_frames = [(str(p), read_table(p, required=("VolumeName", *CTRATE.labels))) for p in labels]
    else:
        raise ValueError("give root=, reports= (and labels=), or from_hub=True")

    label_map: dict[str, list[int | None]] = {}
    label_rows: dict[str, tuple[str, int]] = {}
    for file, df in label_frames:
        missing = [c for c in ("VolumeName", *CTRATE.labels) if c not in df.columns]
        if missing:
            raise DataError(f"missing columns {missing}", file=file)
        for i, rec in enumerate(df.to_dict("records"), start=1):
            vid, _ = _volume_parts(cell_text(rec["VolumeName"]), file=file, row=i)
            _refuse_duplicate(vid, label_rows, file=file, row=i)
            label_map[vid] = [parse_label(rec[lab], file=file, row=i, field=lab) for lab in CTRATE.labels]

    lg = LoadLog(source)
    cols: dict[str, list] = {c: [] for c in ("id", "patient_id", "findings", "impression", "text", "labels")}
    seen: dict[str, tuple[str, int]] = {}
    for file, df in report_frames:
        missing = [c for c in REPORT_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"missing columns {missing}", file=file)
        for i, rec in enumerate(df.to_dict("records"), start=1):
            vid, patient = _volume_parts(cell_text(rec["VolumeName"]), file=file, row=i)
            _refuse_duplicate(vid, seen, file=file, row=i)
            findings = " ".join(cell_text(rec["Findings_EN"]).split())
            impression = " ".join(cell_text(rec["Impressions_EN"]).split())
            if not findings:
                if missing_findings == "error":
                    raise DataError("empty Findings", file=file, row=i, field="Findings_EN")
                lg.skip("empty Findings_EN", file=file, row=i)
                continue
            if label_frames and vid not in label_map:
                lg.skip("no row in the label files", file=file, row=i)
                continue
            text = (
                f"Clinical Information: {cell_text(rec['ClinicalInformation_EN']).strip()}\n"
                f"Technique: {cell_text(rec['Technique_EN']).strip()}\n"
                f"Findings: {findings}\nImpression: {impression}"
            )
            cols["id"].append(vid)
            cols["patient_id"].append(patient)
            cols["findings"].append(findings)
            cols["impression"].append(impression)
            cols["text"].append(text)
            cols["labels"].append(label_map.get(vid, [None] * len(CTRATE)))
    lg.kept = len(cols["id"])
    lg.check_kept(file=", ".join(f for f, _ in report_frames), read=len(seen))
    orphans = len(set(label_map) - set(seen))
    extra = {
        "load": {
            **lg.as_dict(),
            "label_rows_without_report": orphans,
            "policy": {"missing_findings": missing_findings},
        }
    }
    log.info(lg.summary())
    return make_dataset(cols, label_set="ctrate", source=source, credentialed=True, extra=extra)
