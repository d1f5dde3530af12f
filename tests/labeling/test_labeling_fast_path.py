"""The fast rule-teacher path (one dispatched pass over word starts) equals the reference path.

The reference runs every phrase regex (``compile_phrases``) on the whole text with ``finditer``;
the fast path (``phrases.Dispatcher``) must give the same spans for every phrase list, hence the
same mentions and labels, report for report.
"""

from __future__ import annotations

import random
import re

import pytest

from dpcore.data import generate_reports
from dpcore.labeling import RuleTeacher
from dpcore.labeling.phrases import Dispatcher, compile_phrases, expand_leading, literal_prefix
from dpcore.labeling.rules import TRIGGERS_FILE, _read_rules_file
from dpcore.labeling.suite import load_suite

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


def test_fast_path_equals_reference_on_the_suite(teacher_and_kind: tuple[RuleTeacher, str]) -> None:
    teacher, _kind = teacher_and_kind
    for case in load_suite(teacher.label_set.name):
        assert teacher.mentions(case.text) == teacher._mentions_reference(case.text), case.text


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
    vocab = _rule_words(teacher.label_set.name) + ["is", "are", "the", ".", ",", ";", "no", "not", "12 mm"]
    for _ in range(300):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 40)))
        assert teacher.mentions(text) == teacher._mentions_reference(text), text


def _rough_instances(phrases: list[str]) -> str:
    """Text holding rough instances of each phrase: regex syntax stripped, each branch spelled out."""
    out = []
    for p in phrases:
        for alt in expand_leading(p) or [p]:
            out.append(re.sub(r"[\\()?*+\[\]{}|^$]", "", alt))
            out.append(re.sub(r"\(([^()|]*)\|[^()]*\)", r"\1", alt).replace("?", "").replace("\\w*", "s"))
    return " . ".join(out)


def test_dispatcher_equals_finditer_for_every_rule_list() -> None:
    texts = [t for kind in ("cxr", "ct") for t in generate_reports(kind=kind, n=60, seed=5)["findings"]]
    for name in (TRIGGERS_FILE, "chexpert.yml", "ctrate.yml"):
        data, _ = _read_rules_file(name)
        lists = [lst for lst in _phrase_lists(data) if any(str(x).strip() for x in lst)]
        dispatcher = Dispatcher(lists)
        regexes = [compile_phrases(lst) for lst in lists]
        samples = [_rough_instances(lst).lower() for lst in lists] + [t.lower() for t in texts]
        for sample in samples:
            want = [[m.span() for m in rx.finditer(sample)] if rx is not None else [] for rx in regexes]
            assert dispatcher.spans(sample) == want, (name, sample[:80])


@pytest.mark.parametrize("label_set", ["chexpert", "ctrate"])
def test_most_lists_are_dispatched_not_scanned(label_set: str) -> None:
    teacher = RuleTeacher(label_set=label_set)
    # A list with an alternative that cannot be rewritten (a leading "(x ){0,2}", "\\w", a class) is
    # scanned whole over every report, which costs speed: none is today.
    assert teacher._dispatcher.scanned == []


def test_expand_leading_keeps_the_language_and_the_order() -> None:
    cases = [
        "((is|are|was|were) )?not (seen|identified)",
        "(lymph)?adenopath(y|ies)",
        "(mediastinal |hilar )?lymph nodes? (are|is) (\\w+ly )?enlarged",
        "(no|without) (significant )?change",
    ]
    probe = (
        "is not seen. not identified. lymphadenopathy adenopathies. hilar lymph nodes are mildly enlarged. "
    )
    probe += "lymph node is enlarged. without significant change. no change"
    for alt in cases:
        expanded = expand_leading(alt)
        assert expanded is not None and all(literal_prefix(x) for x in expanded)
        one = re.compile(f"(?:{alt})")
        many = re.compile("|".join(f"(?:{x})" for x in expanded))
        starts = [m.start() for m in re.finditer(r"(?<![a-z])[a-z]", probe)]
        for p in starts:
            a, b = one.match(probe, p), many.match(probe, p)
            assert (a and a.span()) == (b and b.span()), (alt, probe[p : p + 30])
    assert expand_leading("(?=x)y") is None and expand_leading("(a|b)+c") is None
