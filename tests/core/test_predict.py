"""``dpcore predict``: CSV / JSONL / Parquet / corpus-folder inputs, the CheXpert convention of the output,
ids carried through in input order, and bad input as one line on stderr with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpcore.cli import main
from dpcore.data import generate_reports
from dpcore.data.cli import write_dataset
from dpcore.release import saved_model
from dpcore.release.inference import OneDNNLinear, onednn_available
from dpcore.release.saved_model import load_classifier, save_classifier
from dpcore.training import train


@pytest.fixture(scope="module")
def model(tiny_config, tiny_splits, tmp_path_factory) -> Path:
    result = train(tiny_config, tiny_splits, keep_model=True, progress=False)
    return save_classifier(result, tmp_path_factory.mktemp("model") / "clf")


@pytest.fixture(scope="module")
def reports():
    return generate_reports(kind="cxr", n=40, seed=3)


@pytest.fixture
def csv(reports, tmp_path) -> Path:
    return write_dataset(reports, tmp_path / "reports.csv")[0]


def _predict(model: Path, source: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert main(["predict", "--model", str(model), str(source), "-o", str(out), "--no-progress", *extra]) == 0
    return {
        ".csv": pd.read_csv,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".parquet": pd.read_parquet,
    }[out.suffix](out)


def test_csv_in_chexpert_convention_in_input_order(model, reports, csv, tmp_path):
    frame = _predict(
        model, csv, tmp_path / "pred.csv", "--probabilities", "--batch-size", "7", "--precision", "float32"
    )
    clf = load_classifier(model)
    names = clf.label_names
    assert list(frame.columns) == ["id", *names, *(f"P({n})" for n in names), "status"]
    assert set(frame["status"]) == {"ok"}
    assert frame["id"].tolist() == list(reports["id"])  # length-sorted batches, written in input order
    labels = frame[names].to_numpy()
    assert set(np.unique(labels)) <= {0, 1}  # 1 positive, 0 negative; never -1 or blank
    probs = clf.predict_proba(list(reports["findings"]), batch_size=7)
    np.testing.assert_allclose(frame[[f"P({n})" for n in names]].to_numpy(), probs, atol=1e-6)
    assert (labels == (frame[[f"P({n})" for n in names]].to_numpy() >= np.array(clf.thresholds))).all()
    assert "findings" not in frame.columns and "text" not in frame.columns  # no report text copied


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "folder"])
def test_other_inputs_and_outputs_agree(model, reports, csv, tmp_path, kind):
    source = write_dataset(reports, tmp_path / ("corpus" if kind == "folder" else f"reports.{kind}"))[0]
    suffix = ".csv" if kind == "folder" else f".{kind}"
    reference = _predict(model, csv, tmp_path / "ref.csv")
    frame = _predict(model, source, tmp_path / f"pred{suffix}")
    assert frame["id"].astype(str).tolist() == reference["id"].astype(str).tolist()
    assert np.array_equal(frame.iloc[:, 1:].to_numpy(), reference.iloc[:, 1:].to_numpy())


def test_no_id_column_numbers_rows_and_text_column_option(model, tmp_path):
    source = tmp_path / "mine.csv"
    pd.DataFrame({"report": ["No effusion.", "Mild pulmonary edema.", "Heart size normal."]}).to_csv(
        source, index=False
    )
    frame = _predict(model, source, tmp_path / "out.jsonl", "--text-column", "report", "--exact")
    assert frame.columns[0] == "row" and frame["row"].tolist() == [1, 2, 3]


def test_fast_prediction_agrees_with_the_exact_model(model, csv, tmp_path):
    """In float32 the fast path merges adapters and runs linear layers through oneDNN: float rounding."""
    fast = _predict(model, csv, tmp_path / "m.parquet", "--probabilities", "--precision", "float32")
    exact = _predict(model, csv, tmp_path / "u.parquet", "--probabilities", "--exact")
    p = [c for c in fast.columns if c.startswith("P(")]
    np.testing.assert_allclose(fast[p].to_numpy(), exact[p].to_numpy(), atol=1e-6, rtol=0)
    assert (fast[[c[2:-1] for c in p]].to_numpy() == exact[[c[2:-1] for c in p]].to_numpy()).mean() > 0.99
    if onednn_available():
        swapped = load_classifier(model, fast=True, precision="float32").model.backbone.modules()
        assert sum(isinstance(m, OneDNNLinear) for m in swapped) == 2 * (
            4 + 2
        )  # 2 layers: q, k, v, o, ffn x2


def test_bfloat16_prediction_agrees_to_its_rounding(model, csv, tmp_path):
    """bfloat16 autocast (what the probe picks on CPUs with bfloat16 units): same labels, close probabilities."""
    half = _predict(model, csv, tmp_path / "b.parquet", "--probabilities", "--precision", "bfloat16")
    exact = _predict(model, csv, tmp_path / "u.parquet", "--probabilities", "--exact")
    p = [c for c in half.columns if c.startswith("P(")]
    np.testing.assert_allclose(half[p].to_numpy(), exact[p].to_numpy(), atol=3e-2, rtol=0)
    # Reports near a threshold are re-run in float32, so bfloat16's rounding flips no label.
    assert (half[[c[2:-1] for c in p]].to_numpy() == exact[[c[2:-1] for c in p]].to_numpy()).all()
    assert load_classifier(model, fast=True, precision="bfloat16").precision == "bfloat16"
    assert load_classifier(model, fast=False, precision="bfloat16").precision == "float32"  # exact: float32


def test_bfloat16_reruns_exactly_the_borderline_reports_in_float32(model, reports, monkeypatch):
    texts = list(reports["findings"])
    half = load_classifier(model, fast=True, precision="bfloat16")
    full = load_classifier(model, fast=True, precision="float32")
    raw = half._probabilities(texts, 64, True, None, "bfloat16")
    ref = full.predict_proba(texts)
    monkeypatch.setattr(saved_model, "BF16_RECHECK_MARGIN", 0.0)  # no report is borderline: bfloat16 alone
    np.testing.assert_array_equal(half.predict_proba(texts), raw)
    monkeypatch.setattr(saved_model, "BF16_RECHECK_MARGIN", 1.0)  # every report is: float32 throughout
    np.testing.assert_allclose(half.predict_proba(texts), ref, atol=1e-5, rtol=0)
    monkeypatch.setattr(saved_model, "BF16_RECHECK_MARGIN", 0.02)
    near = half.borderline(raw)
    mixed = half.predict_proba(texts)
    np.testing.assert_allclose(mixed[near], ref[near], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(mixed[~near], raw[~near])


def _bad_inputs(model: Path, csv: Path, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "header.csv").write_text("id,findings\n")
    (tmp / "blank.csv").write_text("id,findings\na,No effusion.\nb, \n")
    (tmp / "reports.txt").write_text("No effusion.\n")
    (tmp / "notmodel").mkdir()
    out = str(tmp / "out.csv")
    m = ["--model", str(model)]
    return [
        (
            ["--model", str(tmp / "missing"), str(csv), "-o", out],
            f"model folder {tmp / 'missing'}: does not exist",
        ),
        (["--model", str(tmp / "notmodel"), str(csv), "-o", out], "not a saved dpcore classifier"),
        ([*m, str(csv), "-o", out, "--text-column", "report"], "field report: no such column"),
        ([*m, str(tmp / "header.csv"), "-o", out], "no reports to predict"),
        ([*m, str(tmp / "blank.csv"), "-o", out, "--strict"], "row 2, field findings: empty text"),
        ([*m, str(tmp / "reports.txt"), "-o", out], "unknown input format"),
        ([*m, str(csv), "-o", str(tmp / "out.xlsx")], "unknown output format '.xlsx'"),
        ([*m, str(tmp / "nothing.csv"), "-o", out], "file not found"),
        ([*m, str(tmp / "notmodel"), "-o", out], "not a corpus folder"),
        ([*m, str(csv), "-o", out, "--batch-size", "0"], "--batch-size must be positive"),
    ]


def test_bad_input_is_one_line_and_exit_2(model, csv, tmp_path, capsys):
    for argv, message in _bad_inputs(model, csv, tmp_path):
        assert main(["predict", *argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (argv, err)
        assert not (tmp_path / "out.csv").exists()


def test_help_explains_the_convention(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no -1 (uncertain) or blank" in text and "1 positive, 0 negative" in text


def test_empty_rows_are_written_blank_with_their_status(model, tmp_path, capsys):
    """A real export has empty sections: every row comes back in input order; empty ones blank, counted."""
    source = tmp_path / "export.csv"
    findings = ["No effusion.", "", "Mild pulmonary edema.", "   ", None, "Heart size normal."]
    pd.DataFrame({"uid": [11, 12, 13, 14, 15, 16], "findings": findings}).to_csv(source, index=False)
    out = tmp_path / "out.csv"
    argv = ["predict", "--model", str(model), str(source), "-o", str(out), "--no-progress"]
    assert main([*argv, "--id-column", "uid", "--probabilities"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reports"] == 6 and summary["predicted"] == 3
    assert summary["not_predicted"] == {"empty text": 3}
    frame = pd.read_csv(out)
    names = load_classifier(model).label_names
    assert frame["uid"].tolist() == [11, 12, 13, 14, 15, 16]
    assert frame["status"].tolist() == ["ok", "empty text", "ok", "empty text", "empty text", "ok"]
    blank = frame["status"] == "empty text"
    assert frame.loc[blank, [*names, *(f"P({n})" for n in names)]].isna().all().all()
    assert set(np.unique(frame.loc[~blank, names].to_numpy())) <= {0, 1}
    # The rows read are predicted exactly as a file of those rows alone.
    alone = tmp_path / "alone.csv"
    pd.DataFrame({"uid": [11, 13, 16], "findings": [findings[0], findings[2], findings[5]]}).to_csv(
        alone, index=False
    )
    reference = _predict(model, alone, tmp_path / "alone_out.csv", "--id-column", "uid", "--probabilities")
    capsys.readouterr()
    np.testing.assert_allclose(
        frame.loc[~blank, [f"P({n})" for n in names]].to_numpy(),
        reference[[f"P({n})" for n in names]].to_numpy(),
        atol=1e-6,
    )
    # --strict keeps the refusal, and writes nothing.
    out.unlink()
    assert main([*argv, "--strict"]) == 2
    assert "row 2, field findings: empty text (3 of 6 rows)" in capsys.readouterr().err
    assert not out.exists()


def test_every_row_empty_is_written_not_refused(model, tmp_path, capsys):
    source = tmp_path / "empty.jsonl"
    source.write_text('{"findings": ""}\n{"findings": null}\n')
    frame = _predict(model, source, tmp_path / "out.jsonl")
    assert json.loads(capsys.readouterr().out)["predicted"] == 0
    assert frame["row"].tolist() == [1, 2] and frame["status"].tolist() == ["empty text"] * 2
