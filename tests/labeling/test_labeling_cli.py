"""`dpcore label` through a parser built here (the main CLI wires add_label_command)."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from dpcore.labeling.cli import add_label_command


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dpcore")
    add_label_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _write_csv(path, rows) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_label_csv_with_named_text_column(tmp_path) -> None:
    src = tmp_path / "reports.csv"
    _write_csv(
        src,
        [
            {"uid": "a1", "report_text": "Mild cardiomegaly. No effusion."},
            {"uid": "b2", "report_text": "Possible pneumonia."},
        ],
    )
    out = tmp_path / "labels.csv"
    cache = tmp_path / "cache.sqlite"
    args = _parse(
        [
            "label",
            str(src),
            "-o",
            str(out),
            "--text-column",
            "report_text",
            "--id-column",
            "uid",
            "--cache",
            str(cache),
        ]
    )
    assert args.func(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["uid"] for r in rows] == ["a1", "b2"]
    assert rows[0]["Cardiomegaly"] == "1" and rows[0]["Pleural Effusion"] == "0" and rows[0]["Edema"] == ""
    assert rows[1]["Pneumonia"] == "-1" and rows[1]["abstained"] == "False"
    assert cache.exists()


def test_label_saved_dataset_to_jsonl_ctrate(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict(
        {"id": ["x"], "findings": ["Emphysema. No pleural effusion was detected."]}
    ).save_to_disk(str(folder))
    out = tmp_path / "labels.jsonl"
    args = _parse(["label", str(folder), "-o", str(out), "--label-set", "ctrate", "--no-cache"])
    assert args.func(args) == 0
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["id"] == "x" and rec["teacher_labels"][7] == 1 and rec["teacher_labels"][12] == 0


def test_llm_teacher_needs_a_backend(tmp_path) -> None:
    src = tmp_path / "r.csv"
    _write_csv(src, [{"id": "1", "findings": "x"}])
    args = _parse(["label", str(src), "-o", str(tmp_path / "o.csv"), "--teacher", "llm", "--no-cache"])
    with pytest.raises(ValueError, match="needs --llm-url"):
        args.func(args)


def test_remote_llm_refused_for_credentialed_input(tmp_path) -> None:
    from dpcore.labeling.llm import CredentialedDataError

    src = tmp_path / "r.csv"
    _write_csv(src, [{"id": "1", "findings": "x"}])
    argv = [
        "label",
        str(src),
        "-o",
        str(tmp_path / "o.csv"),
        "--teacher",
        "llm",
        "--no-cache",
        "--llm-url",
        "https://llm.example.org/v1",
        "--llm-model",
        "big",
        "--credentialed",
    ]
    args = _parse(argv)
    with pytest.raises(CredentialedDataError, match="non-loopback"):
        args.func(args)
