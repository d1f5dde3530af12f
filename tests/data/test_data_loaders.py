"""Real-format loaders on fixture files written in the exact layouts, odd cases included."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import datasets
import pytest

from dpcore.data import DataError, dataset_meta, split_by_patient
from dpcore.data.ctrate import load_ct_rate
from dpcore.data.fixtures import (
    CT_REPORTS,
    MIMIC_LABELS,
    write_ct_labels,
    write_ct_reports,
    write_mimic_labels,
    write_mimic_split,
)
from dpcore.data.generic import load_chexpert_labeled, load_indiana, load_table
from dpcore.data.mimic import load_mimic_cxr
from dpcore.data.sections import extract_findings_impression, split_sections
from dpcore.labels import CHEXPERT, CTRATE

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "chexpert-golden" / "labeled_reports.csv"


# -- sections -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("report", "findings", "impression"),
    [
        (" FINDINGS:\n Lungs\n clear.\n IMPRESSION:\n Normal.", "Lungs clear.", "Normal."),
        (" FINDINGS AND IMPRESSION: No change.", "No change.", ""),
        (" FINDINGS/IMPRESSION:\n No change.", "No change.", ""),
        (" INDICATION: x\n IMPRESSION: Only this.", "", "Only this."),
        (" FINDING: One.\n CONCLUSION: Two.", "One.", "Two."),
        (" FINDINGS:\n  \n IMPRESSION: Empty findings.", "", "Empty findings."),
        ("No headers at all.", "", ""),
    ],
)
def test_section_variants(report, findings, impression):
    assert extract_findings_impression(report) == (findings, impression)


def test_sections_keep_deidentified_spans():
    s = split_sections(" INDICATION:  ___F with cough\n FINDINGS: ok.")
    assert s["INDICATION"] == "___F with cough" and s["FINDINGS"] == "ok."


# -- MIMIC-CXR ------------------------------------------------------------------------------------------
def test_mimic_folder_with_labels(mimic):
    ds = load_mimic_cxr(reports=mimic["root"], labels=mimic["labels"])
    meta = dataset_meta(ds)
    assert (meta.label_set, meta.source, meta.credentialed) == ("chexpert", "mimic-cxr", True)
    # One report has only an IMPRESSION: skipped by the default policy, and counted.
    assert len(ds) == 4 and meta.extra["load"]["kept"] == 4
    assert meta.extra["load"]["skipped"] == {"no FINDINGS section": 1}
    row = ds.filter(lambda r: r["id"] == "s50414267")[0]
    assert row["patient_id"] == "p10000032"
    assert (
        row["findings"]
        == "There is no focal consolidation, pleural effusion or pneumothorax. Heart size is normal."
    )
    assert row["impression"] == "No acute cardiopulmonary process."
    assert row["labels"][CHEXPERT.index("No Finding")] == 1
    assert row["labels"][CHEXPERT.index("Pneumothorax")] == 0
    assert row["labels"][CHEXPERT.index("Edema")] is None
    combined = ds.filter(lambda r: r["id"] == "s53189527")[0]
    assert combined["findings"].startswith("Moderate cardiomegaly") and combined["impression"] == ""
    unc = ds.filter(lambda r: r["id"] == "s52000001")[0]["labels"]
    assert unc[CHEXPERT.index("Pneumonia")] == -1


def test_mimic_zip_equals_folder(mimic):
    a = load_mimic_cxr(reports=mimic["root"], labels=mimic["labels"])
    b = load_mimic_cxr(reports=mimic["zip"], labels=mimic["labels"])
    assert a["id"] == b["id"] and a["findings"] == b["findings"] and a["labels"] == b["labels"]


def test_mimic_missing_findings_policies(mimic):
    ds = load_mimic_cxr(reports=mimic["root"], missing_findings="impression")
    assert len(ds) == 5
    row = ds.filter(lambda r: r["id"] == "s57375967")[0]
    assert row["findings"] == "Right IJ catheter ends in the low SVC." and row["labels"] == [None] * 14
    assert dataset_meta(ds).extra["load"]["impression_as_findings"] == 1
    with pytest.raises(DataError, match=r"s57375967\.txt.*field findings.*no FINDINGS"):
        load_mimic_cxr(reports=mimic["root"], missing_findings="error")


def test_mimic_official_split(mimic):
    dd = load_mimic_cxr(reports=mimic["root"], labels=mimic["labels"], split=mimic["split"])
    assert isinstance(dd, datasets.DatasetDict)
    assert {k: len(v) for k, v in dd.items()} == {"train": 3, "validation": 0, "test": 1}
    assert dataset_meta(dd["test"]).credentialed


def test_mimic_split_file_that_leaks_a_patient(mimic):
    subjects = {"50414267": "10000032", "53189527": "10000032"}
    bad = write_mimic_split(
        mimic["tmp"] / "bad-split.csv.gz", {"50414267": "train", "53189527": "test"}, subjects
    )
    with pytest.raises(DataError, match="p10000032"):
        load_mimic_cxr(reports=mimic["root"], split=bad)


def test_mimic_report_without_label_row_is_counted(mimic):
    rows = {k: v for k, v in MIMIC_LABELS.items() if k[1] != "53000002"}
    labels = write_mimic_labels(mimic["tmp"] / "partial.csv", rows)
    ds = load_mimic_cxr(reports=mimic["root"], labels=labels)
    assert dataset_meta(ds).extra["load"]["skipped"] == {
        "no FINDINGS section": 1,
        "no row in the label file": 1,
    }


def test_mimic_bad_label_value_names_file_row_field(mimic):
    rows = dict(MIMIC_LABELS)
    rows[("11000011", "52000001")] = {"Consolidation": "2.0"}
    labels = write_mimic_labels(mimic["tmp"] / "bad.csv.gz", rows)
    with pytest.raises(DataError, match=r"bad\.csv\.gz, row 4, field Consolidation.*'2\.0'"):
        load_mimic_cxr(reports=mimic["root"], labels=labels)


def test_mimic_wrong_columns(mimic):
    cols = ["subject_id", "study_id", *sorted(CHEXPERT.labels)[:-1]]
    labels = write_mimic_labels(mimic["tmp"] / "short.csv", MIMIC_LABELS, columns=cols)
    with pytest.raises(DataError, match=r"short\.csv.*missing columns \['Support Devices'\]"):
        load_mimic_cxr(reports=mimic["root"], labels=labels)


def test_mimic_duplicate_label_rows(mimic):
    labels = mimic["tmp"] / "dup.csv"
    write_mimic_labels(labels, MIMIC_LABELS)
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"row 6, field study_id: duplicate study_id 50414267"):
        load_mimic_cxr(reports=mimic["root"], labels=labels)


def test_mimic_missing_files(mimic):
    with pytest.raises(DataError, match="not found"):
        load_mimic_cxr(reports=mimic["tmp"] / "nowhere")
    with pytest.raises(DataError, match="file not found"):
        load_mimic_cxr(reports=mimic["root"], labels=mimic["tmp"] / "missing.csv.gz")


def test_mimic_non_utf8_and_empty_reports(mimic):
    bad = mimic["root"] / "files" / "p13" / "p13000001" / "s54000001.txt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b" FINDINGS: caf\xe9 au lait.\n")
    with pytest.raises(DataError, match=r"s54000001\.txt.*not UTF-8"):
        load_mimic_cxr(reports=mimic["root"])
    bad.write_bytes(b"   \n")
    ds = load_mimic_cxr(reports=mimic["root"])
    assert dataset_meta(ds).extra["load"]["skipped"] == {"empty report": 1, "no FINDINGS section": 1}


def test_mimic_duplicate_study_in_zip(mimic):
    z = mimic["tmp"] / "dup.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("files/p10/p10000032/s50414267.txt", " FINDINGS: a.")
        zf.writestr("files/p11/p11000099/s50414267.txt", " FINDINGS: b.")
    with pytest.raises(DataError, match="duplicate study s50414267"):
        load_mimic_cxr(reports=z)


def test_labels_gzip_is_really_gzip(mimic):
    assert gzip.decompress(mimic["labels"].read_bytes()).startswith(b"subject_id,study_id,Atelectasis")


# -- CT-RATE --------------------------------------------------------------------------------------------
def test_ctrate_folder(ctrate):
    ds = load_ct_rate(root=ctrate)
    meta = dataset_meta(ds)
    assert (meta.label_set, meta.source, meta.credentialed) == ("ctrate", "ct-rate", True)
    assert ds["id"] == ["train_1_a_1", "train_1_a_2", "train_2_a_1", "valid_1_a_1"]
    assert ds["patient_id"] == ["train_1", "train_1", "train_2", "valid_1"]
    assert meta.extra["load"]["skipped"] == {"empty Findings_EN": 1}
    assert (
        ds[2]["findings"]
        == "Cardiomegaly. Bilateral pleural effusion. Pericardial effusion was not observed."
    )
    lab = ds[2]["labels"]
    assert lab[CTRATE.index("Cardiomegaly")] == 1 and lab[CTRATE.index("Pericardial effusion")] == 0
    assert ds[0]["text"].startswith("Clinical Information: Cough.\nTechnique:")
    dd = split_by_patient(ds, fractions=(0.5, 0.25, 0.25), seed=0)
    for name in dd:  # the two reconstructions of patient train_1 stay together
        pids = dd[name]["patient_id"]
        assert pids.count("train_1") in (0, 2)


def test_ctrate_files_and_errors(ctrate, tmp_path):
    rep = ctrate / "dataset" / "radiology_text_reports" / "train_reports.csv"
    lab = ctrate / "dataset" / "multi_abnormality_labels" / "train_predicted_labels.csv"
    assert len(load_ct_rate(reports=[rep], labels=[lab])) == 3
    assert load_ct_rate(reports=[rep])[0]["labels"] == [None] * 18
    bad = tmp_path / "bad_labels.csv"
    write_ct_labels(bad, {"train_1_a_1": ["Lung nodule"]})
    bad.write_text(bad.read_text().replace(",1,", ",yes,"))
    with pytest.raises(DataError, match=r"bad_labels\.csv, row 1, field Lung nodule: label value 'yes'"):
        load_ct_rate(reports=[rep], labels=[bad])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("VolumeName,Findings\ntrain_1_a_1.nii.gz,x\n")
    with pytest.raises(DataError, match=r"wrong\.csv.*missing columns"):
        load_ct_rate(reports=[wrong])
    dup = write_ct_reports(tmp_path / "dup.csv", CT_REPORTS["train"][:1] * 2)
    with pytest.raises(DataError, match=r"dup\.csv, row 2, field VolumeName: duplicate"):
        load_ct_rate(reports=[dup])
    odd = write_ct_reports(tmp_path / "odd.csv", [("scan7.nii.gz", "", "", "x", "")])
    with pytest.raises(DataError, match="odd.csv, row 1, field VolumeName"):
        load_ct_rate(reports=[odd])
    with pytest.raises(DataError, match="empty Findings"):
        load_ct_rate(root=ctrate, missing_findings="error")
    with pytest.raises(DataError, match="no report CSV"):
        load_ct_rate(root=tmp_path)


def test_ctrate_through_datasets_hub_cache(ctrate, monkeypatch):
    import pandas as pd

    rep = pd.read_csv(ctrate / "dataset" / "radiology_text_reports" / "train_reports.csv")
    lab = pd.read_csv(ctrate / "dataset" / "multi_abnormality_labels" / "train_predicted_labels.csv")
    calls = []

    def fake_load_dataset(repo, config, cache_dir=None):
        calls.append((repo, config))
        frame = rep if config == "reports" else lab
        return datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_ct_rate(from_hub=True)
    assert calls == [("ibrahimhamamci/CT-RATE", "reports"), ("ibrahimhamamci/CT-RATE", "labels")]
    assert len(ds) == 3 and dataset_meta(ds).credentialed


# -- generic tables and presets -------------------------------------------------------------------------
def test_indiana_preset(indiana):
    ds = load_indiana(indiana)
    assert ds["id"] == ["1", "2"] and dataset_meta(ds).source == "indiana"
    assert dataset_meta(ds).extra["load"]["skipped"] == {"empty text": 1}
    assert "XXXX" in ds[1]["findings"] and ds[1]["labels"] == [None] * 14
    assert ds[0]["text"].startswith("INDICATION: Positive TB test\nCOMPARISON: None.\nFINDINGS:")


def test_chexpert_golden_labeled_reports():
    ds = load_chexpert_labeled(GOLDEN)
    assert len(ds) >= 4
    first = ds[0]["labels"]
    assert first[CHEXPERT.index("No Finding")] == 1 and first[CHEXPERT.index("Edema")] == 0
    assert first[CHEXPERT.index("Lung Lesion")] is None


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generic_formats(tmp_path, fmt):
    import pandas as pd

    df = pd.DataFrame(
        {
            "rid": ["a", "b"],
            "pid": ["x", "x"],
            "body": ["Mild edema.", "No effusion."],
            "edema": [1.0, None],
            "effusion": [0, 0],
        }
    )
    path = tmp_path / f"t.{fmt}"
    {
        "csv": lambda: df.to_csv(path, index=False),
        "jsonl": lambda: df.to_json(path, orient="records", lines=True),
        "parquet": lambda: df.to_parquet(path),
    }[fmt]()
    ds = load_table(
        path,
        text_column="body",
        id_column="rid",
        patient_column="pid",
        label_columns={"Edema": "edema", "Pleural Effusion": "effusion"},
    )
    assert ds["id"] == ["a", "b"] and ds["patient_id"] == ["x", "x"]
    assert ds[0]["labels"][CHEXPERT.index("Edema")] == 1 and ds[1]["labels"][CHEXPERT.index("Edema")] is None
    assert ds[1]["labels"][CHEXPERT.index("Pleural Effusion")] == 0


def test_generic_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,report,Edema\na,x,1\na,y,0\n")
    with pytest.raises(DataError, match=r"t\.csv, row 2, field id: duplicate id 'a'"):
        load_table(p, text_column="report", id_column="id")
    with pytest.raises(DataError, match="missing columns \\['findings'\\]"):
        load_table(p, text_column="findings")
    with pytest.raises(ValueError, match="not labels of the chexpert"):
        load_table(p, text_column="report", label_columns={"Oedema": "Edema"})
    p.write_text("report,Edema\n ,1\n")
    with pytest.raises(DataError, match="row 1, field report: empty text"):
        load_table(p, text_column="report", missing_text="error")
    q = tmp_path / "latin1.csv"
    q.write_bytes("report\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv.*not UTF-8"):
        load_table(q, text_column="report")
    with pytest.raises(DataError, match="unknown table format"):
        load_table(_touch(tmp_path / "t.xlsx"), text_column="report")


def _touch(p: Path) -> Path:
    p.write_text("")
    return p


# -- duplicates name both rows; a load that keeps nothing is an error ----------------------------------
def test_duplicate_ids_name_both_rows(ctrate, mimic, tmp_path):
    rep = ctrate / "dataset" / "radiology_text_reports" / "train_reports.csv"
    again = write_ct_reports(tmp_path / "again.csv", CT_REPORTS["train"][2:3])
    with pytest.raises(
        DataError,
        match=rf"again\.csv, row 1, field VolumeName: duplicate VolumeName train_2_a_1 \(first at file {rep}, row 3\)",
    ):
        load_ct_rate(reports=[rep, again])
    labels = mimic["tmp"] / "dup.csv"
    write_mimic_labels(labels, MIMIC_LABELS)
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([*lines, lines[2]]) + "\n")
    with pytest.raises(
        DataError, match=r"row 6, field study_id: duplicate study_id 53189527 \(first at row 2\)"
    ):
        load_mimic_cxr(reports=mimic["root"], labels=labels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,report,Edema\n", r"empty\.csv: no rows found: nothing to load"),
        (
            "id,report,Edema\na,,1\nb, ,0\n",
            r"empty\.csv: no report kept: all 2 rows were left out \(2 empty text\)",
        ),
    ],
)
def test_table_without_reports(tmp_path, text, message):
    p = tmp_path / "empty.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        load_table(p, text_column="report", id_column="id")


def test_ctrate_and_mimic_without_reports(ctrate, mimic, tmp_path):
    header = write_ct_reports(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match=r"header\.csv: no rows found"):
        load_ct_rate(reports=[header])
    blank = write_ct_reports(tmp_path / "blank.csv", [("train_9_a_1.nii.gz", "", "", "", "x")])
    with pytest.raises(DataError, match=r"all 1 rows were left out \(1 empty Findings_EN\)"):
        load_ct_rate(reports=[blank])
    empty = tmp_path / "no-reports"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no-reports: no report files like files/p10/"):
        load_mimic_cxr(reports=empty)
    no_labels = write_mimic_labels(tmp_path / "none.csv", {})
    with pytest.raises(DataError, match=r"no report kept: all 5 report files .*4 no row in the label file"):
        load_mimic_cxr(reports=mimic["root"], labels=no_labels)
