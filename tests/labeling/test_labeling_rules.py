"""The rule teacher against CheXpert's published golden cases and the project's golden suite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dpcore.labeling import RuleTeacher
from dpcore.labeling.rules import compile_phrases, normalize
from dpcore.labels import CHEXPERT

# Vendored from the CheXpert labeler (MIT licence, Stanford ML Group; LICENSE beside the files).
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "chexpert-golden"


def _golden_rows() -> list[dict[str, str]]:
    with (GOLDEN_DIR / "labeled_reports.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def chexpert() -> RuleTeacher:
    return RuleTeacher()


def test_chexpert_published_golden_cases(chexpert: RuleTeacher) -> None:
    rows = _golden_rows()
    assert len(rows) == 4
    for row in rows:
        expected = [None if row[lab] == "" else int(float(row[lab])) for lab in CHEXPERT.labels]
        assert chexpert.label_text(row["Reports"]) == expected, row["Reports"]


def test_golden_reports_match_sample_file() -> None:
    with (GOLDEN_DIR / "sample_reports.csv").open(newline="") as f:
        samples = [r[0] for r in csv.reader(f)]
    assert samples == [r["Reports"] for r in _golden_rows()]


def test_vector_shape_and_values(chexpert: RuleTeacher) -> None:
    out = chexpert.label_texts(["", "Cardiomegaly.", "No pneumothorax."])
    assert all(len(v) == 14 for v in out)
    assert all(x in (1, 0, -1, None) for v in out for x in v)
    assert out[1][CHEXPERT.index("Cardiomegaly")] == 1
    assert out[1][0] is None  # a finding: no "No Finding"
    assert out[2][CHEXPERT.index("Pneumothorax")] == 0
    assert out[2][0] == 1


def test_version_changes_with_label_set() -> None:
    assert RuleTeacher().version != RuleTeacher(label_set="ctrate").version
    assert RuleTeacher().version == RuleTeacher().version


def test_unknown_label_set_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown label set"):
        RuleTeacher(label_set="nope")


def test_normalize_splits_sentences_not_decimals() -> None:
    text, bounds = normalize("A 2.5 cm nodule. No effusion")
    assert text == "a 2.5 cm nodule. no effusion"
    assert bounds == [16]


def test_compile_phrases_prefers_longest_and_whole_words() -> None:
    rx = compile_phrases(["effusion", "pleural effusion"])
    assert rx.search("small pleural effusion").group(0) == "pleural effusion"
    assert rx.search("effusions") is None
    assert compile_phrases([]) is None


PROJECT_GOLDEN = Path(__file__).with_name("golden_chexpert.yml")


def _project_golden() -> list[tuple[str, dict[str, int]]]:
    import yaml

    return [(text, expected) for text, expected in yaml.safe_load(PROJECT_GOLDEN.read_text())]


def test_project_golden_suite_size() -> None:
    assert len(_project_golden()) >= 60


@pytest.mark.parametrize(
    "text,expected", _project_golden(), ids=lambda x: x[:40] if isinstance(x, str) else ""
)
def test_project_golden_suite(chexpert: RuleTeacher, text: str, expected: dict[str, int]) -> None:
    want = [expected.get(lab) for lab in CHEXPERT.labels]
    got = chexpert.label_text(text)
    assert dict(zip(CHEXPERT.labels, got, strict=True)) == dict(zip(CHEXPERT.labels, want, strict=True)), (
        chexpert.explain(text)
    )


def test_no_finding_drivers_table_names_labels_and_other_findings(chexpert: RuleTeacher) -> None:
    from dpcore.labeling.agreement import no_finding_drivers

    texts = [
        "Small left effusion. Calcified granuloma.",
        "Degenerative changes of the spine.",
        "No effusion.",
    ]
    truth = [[None] * 14, [1] + [None] * 13, [1] + [None] * 13]
    predicted = chexpert.label_texts(texts)
    reasons = [chexpert.no_finding_drivers(t) for t in texts]
    table = no_finding_drivers(truth, predicted, label_set=CHEXPERT, other=reasons)
    assert (
        table.loc["Pleural Effusion", "reports"] == 1
        and table.loc["Pleural Effusion", "truth_no_finding"] == 0
    )
    assert table.loc["other finding: degenerative", "sole"] == 1
    assert table.loc["other finding: degenerative", "truth_no_finding"] == 1
    assert "No effusion." not in table.index and predicted[2][0] == 1
