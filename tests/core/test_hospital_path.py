"""A hospital's own reports, end to end through the command line: an Open-i (Indiana) export without reference
labels and with empty Findings -> ``corpus load indiana`` -> ``train`` with DP and ``--save-model`` ->
``predict`` on a file with empty rows. No metric against missing labels, every row predicted or said why,
and no backward-hook warning."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from dpcore.cli import main
from dpcore.data import generate_reports
from dpcore.release.saved_model import CARD, MANIFEST
from dpcore.training.private import FROZEN_INPUT_HOOK_WARNING, quiet_frozen_input_hooks

EMPTY_EVERY = 6  # every sixth report of the export has no Findings, as real exports do
INDIANA_COLUMNS = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]


def write_indiana_export(path: Path, n: int, seed: int) -> Path:
    """``indiana_reports.csv`` in the Open-i layout (invented text, MeSH terms, no CheXpert labels)."""
    reports = generate_reports(kind="cxr", n=n, seed=seed)
    rows = [
        (
            i,
            "normal",
            "normal",
            f"{i}_IM-{i:04d}-1001.dcm.png",
            "XXXX-year-old with cough",
            "None.",
            "" if i % EMPTY_EVERY == 0 else r["findings"],
            r["impression"],
        )
        for i, r in enumerate(reports, start=1)
    ]
    pd.DataFrame(rows, columns=INDIANA_COLUMNS).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def hospital(tiny_model, tmp_path_factory) -> dict:
    """The whole path run once: what each command printed and wrote."""
    tmp = tmp_path_factory.mktemp("hospital")
    export = write_indiana_export(tmp / "indiana_reports.csv", n=150, seed=7)
    corpus, model = tmp / "corpus", tmp / "model"
    assert main(["corpus", "load", "indiana", "--path", str(export), "--out", str(corpus)]) == 0
    config = tmp / "run.yaml"
    flat = {"corpus": "disk", "data_path": str(corpus), "model": tiny_model, "max_length": 48, "epochs": 1}
    flat.update(batch_size=16, lora_targets=["query", "value"], mode="dp-lora", noise_multiplier=1.0)
    config.write_text(yaml.safe_dump(flat))
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")  # conftest ignores UserWarning; this test must see them
        argv = [
            "train",
            "--config",
            str(config),
            "--results",
            "",
            "--no-progress",
            "--save-model",
            str(model),
        ]
        assert main(argv) == 0
    return {
        "tmp": tmp,
        "export": export,
        "model": model,
        "summary": json.loads(printed.getvalue()),
        "warnings": [str(w.message) for w in caught],
    }


def test_train_summary_says_no_reference_labels(hospital):
    diagnostics = hospital["summary"]["outside_epsilon"]
    assert diagnostics["test_weighted_f1"] is None  # not 0.0: there is nothing to score against
    assert "no reference labels" in diagnostics["reference_labels"]
    assert 0.0 <= diagnostics["test_weighted_f1_vs_teacher"] <= 1.0
    assert hospital["summary"]["epsilon_rdp"] > 0


def test_saved_manifest_has_no_metric_against_missing_labels(hospital):
    manifest = json.loads((hospital["model"] / MANIFEST).read_text())
    assert manifest["reference_labels"] is False
    assert not any(k.startswith("test_vs_reference") for k in manifest["metrics"])
    assert 0.0 <= manifest["metrics"]["test_vs_teacher_f1_weighted"] <= 1.0


def test_model_card_reports_agreement_with_the_teacher_not_a_zero(hospital):
    card = (hospital["model"] / CARD).read_text()
    results = card.split("## Results (outside epsilon)", 1)[1].split("\n## ", 1)[0]
    assert "No reference labels" in results and "agreement with the teacher" in results
    assert "reference" not in results.replace("No reference labels", "").replace("reference labels", "")
    assert "| test agreement with teacher f1 weighted |" in results


def test_dp_training_prints_no_backward_hook_warning(hospital):
    assert not [w for w in hospital["warnings"] if "Full backward hook" in w]


def test_predict_on_the_export_with_its_empty_rows(hospital, capsys):
    out = hospital["tmp"] / "predictions.csv"
    argv = [
        "predict",
        "--model",
        str(hospital["model"]),
        str(hospital["export"]),
        "--text-column",
        "findings",
    ]
    assert main([*argv, "--id-column", "uid", "-o", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reports"] == 150 and summary["not_predicted"] == {"empty text": 150 // EMPTY_EVERY}
    assert summary["predicted"] == 150 - 150 // EMPTY_EVERY
    frame = pd.read_csv(out)
    assert frame["uid"].tolist() == list(range(1, 151))  # every input row, in input order
    empty = frame["uid"] % EMPTY_EVERY == 0
    assert (frame.loc[empty, "status"] == "empty text").all() and (frame.loc[~empty, "status"] == "ok").all()
    labels = [c for c in frame.columns if c not in ("uid", "status")]
    assert frame.loc[empty, labels].isna().all().all() and frame.loc[~empty, labels].notna().all().all()


def _hooked_backward() -> None:
    """PyTorch's own warning: a full backward hook on a module none of whose inputs requires grad."""
    layer = torch.nn.Linear(2, 1)
    layer.register_full_backward_hook(lambda *_: None)
    layer(torch.ones(1, 2)).sum().backward()


def test_only_the_backward_hook_warning_is_filtered():
    with warnings.catch_warnings(record=True) as bare:
        warnings.simplefilter("always")
        _hooked_backward()
    assert [str(w.message) for w in bare if str(w.message).startswith(FROZEN_INPUT_HOOK_WARNING)]
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        with quiet_frozen_input_hooks():
            _hooked_backward()
            warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in quiet] == ["another warning"]
