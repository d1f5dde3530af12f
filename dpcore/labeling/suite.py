"""The suites: hand-labelled sentences grouped by phenomenon, scored per group.

The development suite lives in ``dpcore/labeling/suite/<label set>_*.yml``, the held-out suite in
``dpcore/labeling/suite/heldout/<label set>_*.yml`` (both written for this project in the phrasing
radiologists use; see the header of each file for its conventions). Rules are changed against the
development suite only; the held-out suite is frozen and scored before and after a round of changes
(``heldout/scores_before.json``, ``heldout/scores_after.json``; see ``heldout/README.md``).

Each file names its label set and holds ``groups``: a phenomenon name -> a list of
``[text, {label: value}]``, labels not listed being "not mentioned". A sentence counts as correct
only when the teacher's whole vector equals the expected one.

>>> cases = load_suite("chexpert")
>>> len(cases) >= 300, cases[0].group
(True, 'list negation')
>>> from dpcore.labeling import RuleTeacher
>>> res = run_suite(RuleTeacher(), cases[:3])
>>> [r.correct for r in res]
[True, True, True]
>>> len(load_suite("chexpert", split="heldout")) >= 150, len(load_suite("ctrate", split="heldout")) >= 100
(True, True)
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

from dpcore.data.schema import DataError
from dpcore.labeling.base import LabelVector, Teacher
from dpcore.labels import LabelSet, get_label_set

SUITE_PACKAGE = "dpcore.labeling"
SUITE_DIR = "suite"
BEFORE_FILE = "before.json"  # the suite scored by the teacher before issue 12 (see write_archive)
HELDOUT_DIR = "heldout"
SPLITS = ("development", "heldout")
HELDOUT_SCORES = {"before": "scores_before.json", "after": "scores_after.json"}


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


def _folder(split: str) -> Any:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    folder = resources.files(SUITE_PACKAGE).joinpath(SUITE_DIR)
    return folder.joinpath(HELDOUT_DIR) if split == "heldout" else folder


def _suite_files(label_set: str, split: str = "development") -> list[Any]:
    folder = _folder(split)
    files = [f for f in folder.iterdir() if f.name.startswith(f"{label_set}_") and f.name.endswith(".yml")]
    return sorted(files, key=lambda f: f.name)


def _read_cases(f: Any, ls: LabelSet, split: str) -> list[SuiteCase]:
    """The cases of one suite file; malformed input is a one-line error naming file, row and field."""
    name = f"{SUITE_DIR}/{HELDOUT_DIR + '/' if split == 'heldout' else ''}{f.name}"
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"not valid YAML: {' '.join(str(err).split())}", file=name) from None
    if not isinstance(data, dict) or data.get("label_set") != ls.name:
        got = data.get("label_set") if isinstance(data, dict) else None
        raise DataError(f"declares label_set {got!r}, not {ls.name!r}", file=name, field="label_set")
    groups = data.get("groups")
    if not isinstance(groups, dict):
        raise DataError(
            "needs a mapping: phenomenon -> [[text, {label: value}], ...]", file=name, field="groups"
        )
    cases = []
    for group, items in groups.items():
        for k, item in enumerate(items or [], start=1):
            row = f"{group} #{k}"
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise DataError("expected [text, {label: value}]", file=name, row=row)
            text, expected = item
            if not isinstance(expected, dict):
                raise DataError(f"expected a mapping of labels, got {expected!r}", file=name, row=row)
            for label, value in expected.items():
                if label not in ls.labels:
                    raise DataError(f"unknown {ls.name} label", file=name, row=row, field=str(label))
                if isinstance(value, bool) or value not in (1, 0, -1):
                    raise DataError(f"value {value!r} is not 1, 0 or -1", file=name, row=row, field=label)
            vector = [expected.get(label) for label in ls.labels]
            cases.append(SuiteCase(str(group), str(text), vector, f.name))
    return cases


def load_suite(label_set: str, *, split: str = "development") -> list[SuiteCase]:
    """Every case of ``label_set``'s development (or held-out) suite, files sorted by name."""
    ls = get_label_set(label_set)
    cases: list[SuiteCase] = []
    for f in _suite_files(ls.name, split):
        cases += _read_cases(f, ls, split)
    if not cases:
        raise FileNotFoundError(f"no {split} suite files for {ls.name} in dpcore/labeling/{SUITE_DIR}")
    return cases


def suite_hash(label_set: str, *, split: str = "development") -> str:
    """A hash of the suite files of ``label_set`` (the archive records which suite it scored)."""
    h = hashlib.sha256()
    for f in _suite_files(get_label_set(label_set).name, split):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_suite(
    teacher: Teacher, cases: Sequence[SuiteCase] | None = None, *, split: str = "development"
) -> list[CaseResult]:
    """The teacher's vector for every case (all of ``teacher.label_set``'s ``split`` suite by default)."""
    cases = load_suite(teacher.label_set.name, split=split) if cases is None else list(cases)
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


def archive_record(
    teacher: Teacher, results: Sequence[CaseResult], *, split: str = "development"
) -> dict[str, Any]:
    """What the archive keeps for one label set: the suite and teacher versions and the scores."""
    return {
        "split": split,
        "suite_sha": suite_hash(teacher.label_set.name, split=split),
        "teacher": teacher.name,
        "rules_version": teacher.version,
        "groups": group_scores(results),
    }


def read_archive() -> dict[str, Any]:
    """The archived "before" scores (``dpcore/labeling/suite/before.json``)."""

    return json.loads(resources.files(SUITE_PACKAGE).joinpath(SUITE_DIR, BEFORE_FILE).read_text())


def read_heldout_scores(which: str) -> dict[str, Any]:
    """The held-out suite's saved scores: ``"before"`` (frozen, before the rules changed) or ``"after"``."""
    if which not in HELDOUT_SCORES:
        raise ValueError(f"which must be one of {sorted(HELDOUT_SCORES)}, not {which!r}")
    path = _folder("heldout").joinpath(HELDOUT_SCORES[which])
    return json.loads(path.read_text())


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
