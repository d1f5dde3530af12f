"""The corpus command line (built into a throwaway parser) and the difficulty baseline."""

from __future__ import annotations

import argparse
import json

import datasets
import pytest

from dpcore.data import dataset_meta, generate_reports
from dpcore.data.cli import add_corpus_commands
from dpcore.data.difficulty import MAX_MACRO_F1, bow_baseline
from dpcore.data.fixtures import write_ctrate_fixture, write_mimic_fixture


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dpcore")
    add_corpus_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_generate_jsonl(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert _run(["corpus", "generate", "--kind", "cxr", "--n", "30", "--seed", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and set(rows[0]) == {
        "id",
        "patient_id",
        "findings",
        "impression",
        "text",
        "labels",
    }
    assert rows[0]["findings"] == generate_reports(n=30, seed=1)[0]["findings"]
    printed = capsys.readouterr().out
    assert "kept 30 reports" in printed and "left out 0" in printed


def test_generate_folder_keeps_meta(tmp_path):
    out = tmp_path / "ct"
    _run(["corpus", "generate", "--kind", "ct", "--n", "12", "--canary", "Canary 123.", "--out", str(out)])
    meta = dataset_meta(datasets.load_from_disk(str(out)))
    assert meta.source == "synthetic-ct" and meta.extra["canaries"][0]["text"] == "Canary 123."


def test_load_mimic_prints_what_it_left_out(tmp_path, capsys):
    paths = write_mimic_fixture(tmp_path)
    out = tmp_path / "mimic.parquet"
    _run(
        [
            "corpus",
            "load",
            "mimic-cxr",
            "--reports",
            str(paths["zip"]),
            "--labels",
            str(paths["labels"]),
            "--split",
            str(paths["split"]),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "credentialed True" in printed and "left out 1: 1 no FINDINGS section" in printed
    assert (tmp_path / "mimic.train.parquet").exists() and (tmp_path / "mimic.test.parquet").exists()


def test_load_ctrate_and_table(tmp_path, capsys):
    root = write_ctrate_fixture(tmp_path)
    _run(["corpus", "load", "ct-rate", "--root", str(root), "--out", str(tmp_path / "ct.csv")])
    assert "left out 1: 1 empty Findings_EN" in capsys.readouterr().out
    table = tmp_path / "t.csv"
    table.write_text("report,edema\nMild edema.,1\n,0\n")
    _run(
        [
            "corpus",
            "load",
            "table",
            "--path",
            str(table),
            "--text-column",
            "report",
            "--label-column",
            "Edema=edema",
            "--out",
            str(tmp_path / "t.jsonl"),
        ]
    )
    assert "left out 1: 1 empty text" in capsys.readouterr().out


def test_load_requires_a_known_source():
    with pytest.raises(SystemExit):
        _run(["corpus", "load", "nih", "--out", "x"])


def test_bow_baseline_is_below_the_bar_but_learns():
    for kind in ("cxr", "ct"):
        r = bow_baseline(generate_reports(kind=kind, n=2000, seed=0), seed=0)
        assert 0.6 < r["macro_f1"] < MAX_MACRO_F1, (kind, r["macro_f1"])
        assert not r["too_easy"]


def test_load_that_keeps_nothing_fails_and_writes_nothing(tmp_path, capsys):
    from dpcore.cli import main

    table = tmp_path / "t.csv"
    table.write_text("report,Edema\n,1\n")
    out = tmp_path / "t.jsonl"
    argv = ["corpus", "load", "table", "--path", str(table), "--text-column", "report", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: file {table}: no report kept: all 1 rows were left out (1 empty text)\n"
    assert not out.exists()
