"""The development suite (dpcore/labeling/suite/): size, per-phenomenon floors, the "before" archive.

Floors (fraction of sentences whose whole vector is right, per group): list negation 0.98 (near
perfect: it is the failure issue 12 is about), node size 0.95, every other group 0.90. The teacher
scores 1.0 on every group when this was written; the floors leave room for vocabulary changes
that trade one sentence for better behaviour elsewhere, not for regressions of a whole phenomenon.
"""

from __future__ import annotations

import argparse

import pytest

from dpcore.labeling import RuleTeacher
from dpcore.labeling.cli import add_label_command
from dpcore.labeling.suite import (
    describe_failure,
    group_scores,
    load_suite,
    read_archive,
    run_suite,
    suite_hash,
)

PHENOMENA = [
    "list negation",
    "post-negation",
    "pseudo-negation",
    "uncertainty",
    "hedged normal",
    "devices",
    "chronic findings",
    "comparisons with prior studies",
]
FLOORS = {"list negation": 0.98, "node size": 0.95}
DEFAULT_FLOOR = 0.90


@pytest.fixture(scope="module", params=["chexpert", "ctrate"])
def scores(request: pytest.FixtureRequest) -> tuple[str, dict, list]:
    teacher = RuleTeacher(label_set=request.param)
    results = run_suite(teacher)
    return request.param, group_scores(results), results


def test_suite_size_and_groups() -> None:
    cxr, ct = load_suite("chexpert"), load_suite("ctrate")
    assert len(cxr) >= 300 and len(ct) >= 200
    for cases in (cxr, ct):
        groups = {c.group for c in cases}
        assert set(PHENOMENA) <= groups
        assert all(sum(c.group == g for c in cases) >= 15 for g in groups)
    assert {"node size", "heart size"} <= {c.group for c in ct}
    for cases in (cxr, ct):
        texts = [c.text for c in cases]
        assert len(set(texts)) == len(texts), "a sentence is in the suite twice"


def test_every_group_clears_its_floor(scores: tuple[str, dict, list]) -> None:
    label_set, by_group, results = scores
    labels = RuleTeacher(label_set=label_set).label_set.labels
    for group, row in by_group.items():
        if group == "all":
            continue
        floor = FLOORS.get(group, DEFAULT_FLOOR)
        failures = [describe_failure(r, labels) for r in results if r.case.group == group and not r.correct]
        assert row["accuracy"] >= floor, (label_set, group, row, failures)


def test_archive_scored_this_suite_with_the_old_teacher() -> None:
    archive = read_archive()
    assert "fc58dfe" in archive["provenance"]["note"]
    for label_set in ("chexpert", "ctrate"):
        record = archive["label_sets"][label_set]
        assert record["suite_sha"] == suite_hash(label_set), "suite changed: regenerate before.json"
        assert record["rules_version"] != RuleTeacher(label_set=label_set).version
        assert set(PHENOMENA) <= set(record["groups"])
        assert record["groups"]["all"]["n"] == len(load_suite(label_set))


def test_suite_command_prints_accuracy_per_phenomenon(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    parser = argparse.ArgumentParser(prog="dpcore")
    add_label_command(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "scores.json"
    args = parser.parse_args(["label", "suite", "--label-set", "ctrate", "--json", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "rules-ctrate" in printed and "node size" in printed and "list negation" in printed
    import json

    record = json.loads(out.read_text())
    assert list(record["label_sets"]) == ["ctrate"]
    assert record["label_sets"]["ctrate"]["groups"]["all"]["n"] == len(load_suite("ctrate"))


def test_the_issue_examples_are_negated_throughout() -> None:
    teacher = RuleTeacher()
    examples = [
        "No focal consolidation, suspicious opacity, large effusion, or pneumothorax is identified.",
        "The lungs are clear without focal airspace disease, effusion or pneumothorax.",
        "Lungs are free of focal infiltrate, edema, and effusion.",
        "There is no evidence of pneumonia, pleural effusion or pneumothorax.",
    ]
    for text in examples:
        values = [v for _label, _mention, v in teacher.explain(text)]
        assert len(values) >= 3 and set(values) == {0}, teacher.explain(text)
        assert teacher.label_text(text)[0] == 1  # No Finding


def test_no_finding_drivers_and_the_labels_only_variant() -> None:
    text = "Lungs are clear. Calcified granuloma. No effusion. Possible rib fracture."
    chexpert = RuleTeacher()
    assert chexpert.no_finding_drivers(text) == [
        "Fracture",
        "other finding: calcified",
        "other finding: granuloma",
    ]
    labels_only = RuleTeacher(no_finding="labels")
    assert labels_only.version != chexpert.version and labels_only.name == "rules-chexpert-nf-labels"
    assert labels_only.label_text("Calcified granuloma. No effusion.")[0] == 1
    assert chexpert.label_text("Calcified granuloma. No effusion.")[0] is None
    assert chexpert.no_finding_drivers("No effusion.") == []
    with pytest.raises(ValueError, match="no_finding"):
        RuleTeacher(no_finding="nope")  # type: ignore[arg-type]
