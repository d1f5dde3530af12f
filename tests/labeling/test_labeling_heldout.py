"""The held-out suite (dpcore/labeling/suite/heldout/): it loads, is big enough, is apart from the
development suite, and its malformed input is refused with a one-line error.

No test here asserts a held-out score: the suite measures the rules, it does not constrain them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dpcore.data.schema import DataError
from dpcore.labeling.suite import _read_cases, load_suite, read_heldout_scores, suite_hash
from dpcore.labels import get_label_set

NEW_PHENOMENA = {
    "chexpert": {
        "de-identification placeholders",
        "hedged infection and fluid",
        "lesion versus benign nodule",
    },
    "ctrate": {
        "de-identification placeholders",
        "translated phrasing",
        "coronary plaque and atheroma",
        "node size",
        "hedged infection and fluid",
        "lesion versus benign nodule",
    },
}


@pytest.mark.parametrize("label_set,minimum", [("chexpert", 150), ("ctrate", 100)])
def test_heldout_suite_loads_with_the_required_counts(label_set: str, minimum: int) -> None:
    cases = load_suite(label_set, split="heldout")
    assert len(cases) >= minimum
    groups = {c.group for c in cases}
    assert NEW_PHENOMENA[label_set] <= groups
    assert {"list negation", "uncertainty", "devices", "comparisons with prior studies"} <= groups
    texts = [c.text.lower() for c in cases]
    assert len(set(texts)) == len(texts), "a sentence is in the held-out suite twice"
    placeholders = [c for c in cases if c.group == "de-identification placeholders"]
    for token in ("XXXX", "___", "[**"):
        assert any(token in c.text for c in placeholders), token


@pytest.mark.parametrize("label_set", ["chexpert", "ctrate"])
def test_heldout_and_development_share_no_sentence(label_set: str) -> None:
    dev = {c.text.lower() for c in load_suite(label_set)}
    held = {c.text.lower() for c in load_suite(label_set, split="heldout")}
    assert not dev & held


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_suite("chexpert", split="test")


@pytest.mark.parametrize(
    "body,where",
    [
        ("label_set: ctrate\ngroups: {}\n", "field label_set"),
        ("label_set: chexpert\ngroups: [1, 2]\n", "field groups"),
        ("label_set: chexpert\ngroups:\n  g:\n    - just a sentence\n", "row g #1"),
        (
            "label_set: chexpert\ngroups:\n  g:\n    - [ok., {Edema: 0}]\n    - [bad., {Edema: 2}]\n",
            "row g #2, field Edema",
        ),
        ("label_set: chexpert\ngroups:\n  g:\n    - [bad., {Oedema: 1}]\n", "row g #1, field Oedema"),
        ("label_set: chexpert\ngroups:\n  g:\n    - [bad., {Edema: true}]\n", "field Edema"),
        ("label_set: chexpert\ngroups: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_suite_input_is_a_one_line_error_naming_the_place(tmp_path: Path, body: str, where: str) -> None:
    f = tmp_path / "chexpert_bad.yml"
    f.write_text(body)
    with pytest.raises(DataError) as err:
        _read_cases(f, get_label_set("chexpert"), "heldout")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("file suite/heldout/chexpert_bad.yml") and where in message, message


@pytest.mark.parametrize("label_set", ["chexpert", "ctrate"])
def test_frozen_before_scores_exist_and_scored_this_suite(label_set: str) -> None:
    before = read_heldout_scores("before")
    assert before["provenance"]["split"] == "heldout" and before["provenance"]["labeling_clean"] is True
    assert len(before["provenance"]["commit"]) == 40 and before["provenance"]["date"]
    record = before["label_sets"][label_set]
    # The held-out files are frozen: their hash is the one scored before the rules changed.
    assert record["suite_sha"] == suite_hash(label_set, split="heldout"), "held-out suite edited"
    groups = record["groups"]
    assert groups["all"]["n"] == len(load_suite(label_set, split="heldout"))
    assert NEW_PHENOMENA[label_set] <= set(groups)


def test_final_scores_exist_beside_the_frozen_ones() -> None:
    before, after = read_heldout_scores("before"), read_heldout_scores("after")
    assert after["provenance"]["split"] == "heldout" and after["provenance"]["labeling_clean"] is True
    assert after["provenance"]["commit"] != before["provenance"]["commit"]
    for label_set in ("chexpert", "ctrate"):
        old, new = before["label_sets"][label_set], after["label_sets"][label_set]
        assert new["suite_sha"] == old["suite_sha"] == suite_hash(label_set, split="heldout")
        assert new["rules_version"] != old["rules_version"]  # scored after the rules changed
        assert set(new["groups"]) == set(old["groups"])
    with pytest.raises(ValueError, match="which must be one of"):
        read_heldout_scores("during")
