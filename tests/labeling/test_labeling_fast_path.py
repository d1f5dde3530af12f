"""The fast rule-teacher path (literal gates, first-character guards) equals the reference path.

The reference runs every phrase regex, built as before the optimisation, on the whole text; the
fast path must give the same mentions (hence labels) report for report.
"""

from __future__ import annotations

import random

import pytest

from dpcore.data import generate_reports
from dpcore.labeling import RuleTeacher
from dpcore.labeling.rules import (
    TRIGGERS_FILE,
    _first_chars,
    _read_rules_file,
    compile_phrases,
    required_literals,
)

LABEL_SETS = [("chexpert", "cxr"), ("ctrate", "ct")]


@pytest.fixture(scope="module", params=LABEL_SETS, ids=[ls for ls, _ in LABEL_SETS])
def teacher_and_kind(request: pytest.FixtureRequest) -> tuple[RuleTeacher, str]:
    label_set, kind = request.param
    return RuleTeacher(label_set=label_set), kind


def test_fast_path_equals_reference_on_synthetic_reports(
    teacher_and_kind: tuple[RuleTeacher, str],
) -> None:
    teacher, kind = teacher_and_kind
    texts = generate_reports(kind=kind, n=300, seed=11)["findings"]
    for text in texts:
        assert teacher.mentions(text) == teacher._mentions_reference(text), text
        assert teacher.label_text(text) == teacher._label_reference(text), text


def _rule_words(label_set: str) -> list[str]:
    """Words of every phrase and trigger, so random texts hit many rules and their overlaps."""
    words: set[str] = set()
    for name in (TRIGGERS_FILE, f"{label_set}.yml"):
        data, _ = _read_rules_file(name)
        for value in _phrase_lists(data):
            for phrase in value:
                words.update(w.strip("()?|\\") for w in str(phrase).split())
    return sorted(w for w in words if w)


def _phrase_lists(data: object) -> list[list[str]]:
    if isinstance(data, list):
        return [[str(x) for x in data]]
    if isinstance(data, dict):
        return [lst for v in data.values() for lst in _phrase_lists(v)]
    return []


def test_fast_path_equals_reference_on_random_rule_words(
    teacher_and_kind: tuple[RuleTeacher, str],
) -> None:
    teacher, _kind = teacher_and_kind
    rng = random.Random(3)
    vocab = _rule_words(teacher.label_set.name) + ["is", "are", "the", ".", ",", ";", "no", "not"]
    for _ in range(300):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 40)))
        assert teacher.mentions(text) == teacher._mentions_reference(text), text


def test_gates_are_sound_for_every_rule_phrase() -> None:
    """Every match of a phrase contains one of its required literals and starts as predicted."""
    for name in (TRIGGERS_FILE, "chexpert.yml", "ctrate.yml"):
        data, _ = _read_rules_file(name)
        for phrases in _phrase_lists(data):
            rx = compile_phrases(phrases)
            if rx is None:
                continue
            sample = " . ".join(p.replace("\\", "") for p in phrases)  # rough instances
            lits = required_literals(phrases)
            for m in rx.finditer(sample):
                assert lits is None or any(lit in m.group(0) for lit in lits), m.group(0)
            for p in phrases:
                first = _first_chars(p.strip())
                for m in compile_phrases([p]).finditer(sample):  # type: ignore[union-attr]
                    assert first is None or m.group(0)[0] in first, (p, m.group(0))


def test_fast_regex_is_an_equivalent_rewrite() -> None:
    phrases = ["((is|are) )?difficult to exclude", "(may|might) be", "no", "\\w+ly enlarged"]
    slow, fast = compile_phrases(phrases), compile_phrases(phrases, dispatch=True)
    assert slow is not None and fast is not None and slow.pattern != fast.pattern
    text = "it is difficult to exclude; may be mildly enlarged, no, difficult to exclude, nodule"
    assert [m.span() for m in slow.finditer(text)] == [m.span() for m in fast.finditer(text)]
