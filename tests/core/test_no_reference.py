"""No reference labels is a state, not a zero: a corpus whose reference column holds only ``None`` (a
hospital's own reports, labelled by the teacher alone) gets no metric against it, and results, the train
summary, the saved manifest, the model card and study tables say so."""

from __future__ import annotations

import json
import math

import pytest

from dpcore.release.model_card import _example_manifest, model_card
from dpcore.release.saved_model import MANIFEST, save_classifier
from dpcore.study import study_table
from dpcore.training import RunResult, train
from dpcore.training.coverage import run_summary


@pytest.fixture(scope="module")
def unlabelled(tiny_splits):
    """The tiny splits with every reference label removed (the teacher's labels kept)."""
    return tiny_splits.map(lambda r: {"labels": [None] * len(r["labels"])})


@pytest.fixture(scope="module")
def results(tiny_config, tiny_splits, unlabelled) -> dict[str, RunResult]:
    return {
        "labelled": train(tiny_config, tiny_splits, progress=False),
        "unlabelled": train(tiny_config, unlabelled, progress=False, keep_model=True),
    }


def test_unlabelled_result_has_no_reference_metrics(results, tmp_path):
    result = results["unlabelled"]
    assert result.metrics["test_vs_reference"] is None and not result.has_reference_labels
    assert "no reference labels" in result.metrics["no_reference"]
    assert result.weighted_f1 is None
    assert 0.0 <= result.teacher_weighted_f1 <= 1.0
    again = RunResult.load(result.save(tmp_path / "r.json"))  # the state survives the JSON round trip
    assert again.weighted_f1 is None and not again.has_reference_labels


def test_labelled_result_keeps_its_reference_metrics(results):
    result = results["labelled"]
    assert result.has_reference_labels and "no_reference" not in result.metrics
    assert isinstance(result.weighted_f1, float)
    assert result.weighted_f1 == result.metrics["test_vs_reference"]["f1"]["weighted"]
    assert "reference_labels" not in run_summary(result)["outside_epsilon"]


def test_summary_says_no_reference_labels_and_gives_teacher_agreement(results):
    diagnostics = run_summary(results["unlabelled"])["outside_epsilon"]
    assert diagnostics["test_weighted_f1"] is None
    assert diagnostics["test_weighted_f1_vs_teacher"] == results["unlabelled"].teacher_weighted_f1
    assert "no reference labels" in diagnostics["reference_labels"]


def test_study_table_shows_nan_not_zero(results):
    table = study_table([results["labelled"], results["unlabelled"]])
    assert not math.isnan(table["weighted_f1"][0])
    assert math.isnan(table["weighted_f1"][1]) and math.isnan(table["macro_auroc"][1])


def test_saved_model_card_reports_teacher_agreement(results, tmp_path):
    folder = save_classifier(results["unlabelled"], tmp_path / "clf")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["reference_labels"] is False
    assert set(manifest["metrics"]) == {f"test_vs_teacher_f1_{a}" for a in ("weighted", "micro", "macro")}
    card = model_card(manifest)
    results_section = card.split("## Results (outside epsilon)")[1].split("\n## ")[0]
    assert "No reference labels" in results_section and "test vs reference" not in results_section


def test_card_of_a_manifest_saved_before_the_state_keeps_its_table():
    manifest = {**_example_manifest(), "metrics": {"test_vs_reference_f1_weighted": 0.5}}
    assert "| test vs reference f1 weighted | 0.5000 |" in model_card(manifest)
    assert "No reference labels" not in model_card(manifest)
