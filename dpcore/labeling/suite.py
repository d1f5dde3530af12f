"""The development suite: hand-labelled sentences grouped by phenomenon, scored per group.

The sentences live in ``dpcore/labeling/suite/<label set>_*.yml`` (written for this project in the
phrasing radiologists use; see the header of each file for its conventions). Each file names its
label set and holds ``groups``: a phenomenon name -> a list of ``[text, {label: value}]``, labels not
listed being "not mentioned". A sentence counts as correct only when the teacher's whole vector
equals the expected one.

>>> cases = load_suite("chexpert")
>>> len(cases) >= 300, cases[0].group
(True, 'list negation')
>>> from dpcore.labeling import RuleTeacher
>>> res = run_suite(RuleTeacher(), cases[:3])
>>> [r.correct for r in res]
[True, True, True]
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dpcore.labeling.base import LabelVector, Teacher
from dpcore.labels import get_label_set

SUITE_PACKAGE = "dpcore.labeling"
SUITE_DIR = "suite"
BEFORE_FILE = "before.json"  # the suite scored by the teacher before issue 12 (see write_archive)


@dataclass(frozen=True)
class SuiteCase:
    """One hand-labelled sentence of the development suite."""

    group: str
    text: str
    expected: LabelVector
    source: str  # file name


@dataclass(frozen=True)
class CaseResult:
    case: SuiteCase
    got: LabelVector

    @property
    def correct(self) -> bool:
        return list(self.got) == list(self.expected)

    @property
    def expected(self) -> LabelVector:
        return self.case.expected


def _suite_files(label_set: str) -> list[Any]:
    folder = resources.files(SUITE_PACKAGE).joinpath(SUITE_DIR)
    files = [f for f in folder.iterdir() if f.name.startswith(f"{label_set}_") and f.name.endswith(".yml")]
    return sorted(files, key=lambda f: f.name)


def load_suite(label_set: str) -> list[SuiteCase]:
    """Every case of ``label_set``'s suite, in file order (files sorted by name)."""
    ls = get_label_set(label_set)
    cases: list[SuiteCase] = []
    for f in _suite_files(ls.name):
        data = yaml.safe_load(f.read_text()) or {}
        if data.get("label_set") != ls.name:
            raise ValueError(f"{f.name} declares label_set {data.get('label_set')!r}, not {ls.name!r}")
        for group, items in (data.get("groups") or {}).items():
            for text, expected in items:
                unknown = set(expected) - set(ls.labels)
                bad = {k: v for k, v in expected.items() if v not in (1, 0, -1)}
                if unknown or bad:
                    raise ValueError(f"{f.name}, {text!r}: unknown labels {unknown} or values {bad}")
                vector = [expected.get(label) for label in ls.labels]
                cases.append(SuiteCase(str(group), str(text), vector, f.name))
    if not cases:
        raise FileNotFoundError(f"no suite files for {ls.name} in dpcore/labeling/{SUITE_DIR}")
    return cases


def suite_hash(label_set: str) -> str:
    """A hash of the suite files of ``label_set`` (the archive records which suite it scored)."""
    h = hashlib.sha256()
    for f in _suite_files(get_label_set(label_set).name):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_suite(teacher: Teacher, cases: Sequence[SuiteCase] | None = None) -> list[CaseResult]:
    """The teacher's vector for every case (all of ``teacher.label_set``'s suite by default)."""
    cases = load_suite(teacher.label_set.name) if cases is None else list(cases)
    vectors = teacher.label_texts([c.text for c in cases])
    return [
        CaseResult(c, list(v) if v is not None else [None] * len(c.expected))
        for c, v in zip(cases, vectors, strict=True)
    ]


def group_scores(results: Sequence[CaseResult]) -> dict[str, dict[str, float | int]]:
    """Per group (in order of first appearance) and ``all``: cases, correct, accuracy."""
    out: dict[str, dict[str, float | int]] = {}
    for r in results:
        row = out.setdefault(r.case.group, {"n": 0, "correct": 0})
        row["n"] += 1
        row["correct"] += int(r.correct)
    out["all"] = {"n": len(results), "correct": sum(int(r.correct) for r in results)}
    for row in out.values():
        row["accuracy"] = round(row["correct"] / row["n"], 4) if row["n"] else float("nan")
    return out


def describe_failure(result: CaseResult, labels: Sequence[str]) -> str:
    """One line per failing case: the text and the labels that differ (expected -> got)."""
    diffs = [
        f"{lab}: {e} -> {g}" for lab, e, g in zip(labels, result.expected, result.got, strict=True) if e != g
    ]
    return f"[{result.case.group}] {result.case.text}\n    " + "; ".join(diffs)


def load_teacher_from(directory: str | Path, *, label_set: str) -> Teacher:
    """A rule teacher built from another copy of ``dpcore/labeling`` (e.g. an older commit's).

    Only that copy's ``base.py``, ``rules.py`` and ``rules/*.yml`` are used; its imports of
    ``dpcore.labeling`` are pointed at the copy, so the old aggregation and rule files are the ones
    that run. This is how the archived "before" scores were computed (see :func:`write_archive`).
    """
    directory = Path(directory).resolve()
    if not (directory / "rules.py").is_file():
        raise FileNotFoundError(f"{directory} holds no rules.py (give a copy of dpcore/labeling)")
    alias = "_dpcore_labeling_" + hashlib.sha256(str(directory).encode()).hexdigest()[:10]
    if f"{alias}.rules" not in sys.modules:
        init = directory / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            alias, init, submodule_search_locations=[str(directory)]
        )
        assert spec is not None
        sys.modules[alias] = importlib.util.module_from_spec(spec)  # not executed: no __init__ imports
        for name in ("base", "rules"):
            path = directory / f"{name}.py"
            source = path.read_text().replace("dpcore.labeling", alias)
            sub_spec = importlib.util.spec_from_loader(f"{alias}.{name}", loader=None, origin=str(path))
            assert sub_spec is not None
            module = importlib.util.module_from_spec(sub_spec)
            module.__file__ = str(path)
            sys.modules[module.__name__] = module
            exec(compile(source, str(path), "exec"), module.__dict__)
    return sys.modules[f"{alias}.rules"].RuleTeacher(label_set=label_set)


def archive_record(teacher: Teacher, results: Sequence[CaseResult]) -> dict[str, Any]:
    """What the archive keeps for one label set: the suite and teacher versions and the scores."""
    return {
        "suite_sha": suite_hash(teacher.label_set.name),
        "teacher": teacher.name,
        "rules_version": teacher.version,
        "groups": group_scores(results),
    }


def read_archive() -> dict[str, Any]:
    """The archived "before" scores (``dpcore/labeling/suite/before.json``)."""

    return json.loads(resources.files(SUITE_PACKAGE).joinpath(SUITE_DIR, BEFORE_FILE).read_text())


def phenomena_table(teachers: Sequence[Teacher], archive: dict[str, Any] | None = None) -> Any:
    """Sentences right per phenomenon, before (the archive) and after (``teachers``, scored now).

    One row per (label set, phenomenon), ``all`` included; a pandas DataFrame.
    """

    archive = read_archive() if archive is None else archive
    rows = []
    for teacher in teachers:
        name = teacher.label_set.name
        before = archive["label_sets"][name]["groups"]
        for group, row in group_scores(run_suite(teacher)).items():
            old = before.get(group, {}).get("accuracy", float("nan"))
            rows.append((name, group, row["n"], old, row["accuracy"]))
    columns = ["label set", "phenomenon", "sentences", "before", "after"]
    return pd.DataFrame(rows, columns=columns).set_index(["label set", "phenomenon"])
