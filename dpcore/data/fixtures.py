"""Small files in the exact layouts of MIMIC-CXR, CT-RATE and Indiana, with invented text.

They test the loaders and let the book show a load without credentialed data.

>>> import tempfile
>>> paths = write_mimic_fixture(tempfile.mkdtemp())
>>> sorted(paths)
['labels', 'root', 'split', 'zip']
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pandas as pd

from dpcore.labels import CHEXPERT, CTRATE

MIMIC_REPORTS = {
    # (subject, study): text
    ("10000032", "50414267"): (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___F with cough  // eval for pneumonia\n \n TECHNIQUE:  Chest PA and lateral\n \n"
        " COMPARISON:  ___\n \n FINDINGS:\n \n There is no focal consolidation, pleural effusion or\n"
        " pneumothorax.  Heart size is normal.\n \n IMPRESSION:\n \n No acute cardiopulmonary process.\n"
    ),
    ("10000032", "53189527"): (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n"
        " INDICATION:  ___ with dyspnea\n \n FINDINGS AND IMPRESSION:\n Moderate cardiomegaly with mild\n"
        " pulmonary edema and small bilateral effusions.\n"
    ),
    ("10000764", "57375967"): (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n"
        " INDICATION:  Line placement.\n \n IMPRESSION:\n \n Right IJ catheter ends in the low SVC.\n"
    ),
    ("11000011", "52000001"): (
        "                                 FINAL REPORT\n INDICATION:  Fever.\n \n FINDINGS:\n"
        " Right lower lobe consolidation, possibly pneumonia.\n \n IMPRESSION:\n Pneumonia.\n"
    ),
    ("12000022", "53000002"): (
        "                                 FINAL REPORT\n FINDINGS:\n Small left apical pneumothorax.\n"
        " \n IMPRESSION:\n Left pneumothorax.\n"
    ),
}
# Label rows (canonical order values), empty means not mentioned; written in the file's alphabetical order.
MIMIC_LABELS = {
    ("10000032", "50414267"): {
        "No Finding": "1.0",
        "Consolidation": "0.0",
        "Pleural Effusion": "0.0",
        "Pneumothorax": "0.0",
        "Cardiomegaly": "0.0",
    },
    ("10000032", "53189527"): {"Cardiomegaly": "1.0", "Edema": "1.0", "Pleural Effusion": "1.0"},
    ("10000764", "57375967"): {"Support Devices": "1.0"},
    ("11000011", "52000001"): {"Consolidation": "1.0", "Pneumonia": "-1.0"},
    ("12000022", "53000002"): {"Pneumothorax": "1.0"},
}
MIMIC_SPLIT = {
    "50414267": "train",
    "53189527": "train",
    "57375967": "validate",
    "52000001": "train",
    "53000002": "test",
}


def write_mimic_labels(path: Path, rows: dict, *, columns: list[str] | None = None) -> Path:
    cols = columns or ["subject_id", "study_id", *sorted(CHEXPERT.labels)]
    lines = [",".join(cols)]
    for (subject, study), vals in rows.items():
        cell = {"subject_id": subject, "study_id": study, **vals}
        lines.append(",".join(cell.get(c, "") for c in cols))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mimic_split(path: Path, split: dict, subjects: dict) -> Path:
    lines = ["dicom_id,study_id,subject_id,split"]
    for study, name in split.items():
        for k in range(2):  # several images (DICOMs) per study
            lines.append(f"d{study}{k},{study},{subjects[study]},{name}")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def write_mimic_fixture(folder: str | Path) -> dict[str, Path]:
    """Reports folder and zip, chexpert label CSV.gz and split CSV.gz; one report lacks FINDINGS."""
    tmp_path = Path(folder)
    root = tmp_path / "mimic-cxr-reports"
    for (subject, study), text in MIMIC_REPORTS.items():
        p = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    zpath = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(root.rglob("*.txt")):
            zf.write(p, p.relative_to(tmp_path).as_posix())
    subjects = {study: subject for subject, study in MIMIC_REPORTS}
    return {
        "root": root,
        "zip": zpath,
        "labels": write_mimic_labels(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABELS),
        "split": write_mimic_split(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT, subjects),
    }


CT_REPORTS = {
    "train": [
        (
            "train_1_a_1.nii.gz",
            "Cough.",
            "Non-contrast chest CT.",
            "Trachea and both main bronchi are open. A 6 mm nodule is seen in the right upper lobe.",
            "Right upper lobe nodule.",
        ),
        (
            "train_1_a_2.nii.gz",
            "Cough.",
            "Non-contrast chest CT.",
            "Trachea and both main bronchi are open. A 6 mm nodule is seen in the right upper lobe.",
            "Right upper lobe nodule.",
        ),
        (
            "train_2_a_1.nii.gz",
            "Dyspnea.",
            "Chest CT.",
            "Cardiomegaly. Bilateral pleural effusion.\nPericardial effusion was not observed.",
            "Cardiomegaly, effusions.",
        ),
        ("train_3_b_1.nii.gz", "Not given.", "Chest CT.", "", "Normal."),
    ],
    "validation": [
        (
            "valid_1_a_1.nii.gz",
            "Fever.",
            "Chest CT.",
            "Ground glass opacities in both lungs.",
            "Viral pneumonia?",
        ),
    ],
}
CT_POSITIVE = {
    "train_1_a_1": ["Lung nodule"],
    "train_1_a_2": ["Lung nodule"],
    "train_2_a_1": ["Cardiomegaly", "Pleural effusion"],
    "train_3_b_1": [],
    "valid_1_a_1": ["Lung opacity"],
}


def write_ct_reports(path: Path, rows: list[tuple]) -> Path:
    cols = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


def write_ct_labels(path: Path, positives: dict[str, list[str]]) -> Path:
    lines = [",".join(["VolumeName", *CTRATE.labels])]
    for vid, pos in positives.items():
        lines.append(",".join([f"{vid}.nii.gz", *("1" if lab in pos else "0" for lab in CTRATE.labels)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_ctrate_fixture(folder: str | Path) -> Path:
    """A CT-RATE folder (``dataset/...``) with two report CSVs and two label CSVs; one empty Findings."""
    root = Path(folder) / "CT-RATE"
    rep = root / "dataset" / "radiology_text_reports"
    lab = root / "dataset" / "multi_abnormality_labels"
    rep.mkdir(parents=True)
    lab.mkdir(parents=True)
    write_ct_reports(rep / "train_reports.csv", CT_REPORTS["train"])
    write_ct_reports(rep / "validation_reports.csv", CT_REPORTS["validation"])
    write_ct_labels(
        lab / "train_predicted_labels.csv", {k: v for k, v in CT_POSITIVE.items() if "train" in k}
    )
    write_ct_labels(
        lab / "valid_predicted_labels.csv", {k: v for k, v in CT_POSITIVE.items() if "valid" in k}
    )
    return root


def write_indiana_fixture(folder: str | Path) -> Path:
    """An ``indiana_reports.csv`` with one report whose findings are empty."""
    tmp_path = Path(folder)
    rows = [
        (
            "1",
            "normal",
            "normal",
            "1_IM-0001-4001.dcm.png",
            "Positive TB test",
            "None.",
            "The cardiac silhouette and mediastinum size are within normal limits. No pneumothorax.",
            "Normal chest x-XXXX.",
        ),
        (
            "2",
            "Cardiomegaly/borderline",
            "Cardiomegaly",
            "2_IM-0652-1001.dcm.png",
            "XXXX-year-old male",
            "XXXX",
            "Borderline cardiomegaly. Midline sternotomy XXXX.",
            "No acute pulmonary findings.",
        ),
        ("3", "normal", "normal", "3_IM-1384-1001.dcm.png", "dyspnea", "", "", "No active disease."),
    ]
    cols = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
    path = tmp_path / "indiana_reports.csv"
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path
