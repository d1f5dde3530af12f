"""label_dataset: the column it adds, abstentions, and the cache."""

from __future__ import annotations

import datasets
import pytest

from dpcore.labeling import LabelCache, RuleTeacher, label_dataset, label_dataset_with_stats
from dpcore.labels import CHEXPERT, LabelSet


class CountingTeacher:
    """Abstains on texts containing 'garbled', counts how many texts it was asked about."""

    name = "counting"
    version = "1"
    label_set: LabelSet = CHEXPERT

    def __init__(self) -> None:
        self.calls = 0

    def label_texts(self, texts):
        self.calls += len(texts)
        return [None if "garbled" in t else [1] + [None] * 13 for t in texts]


def _ds() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "id": ["r1", "r2", "r3"],
            "findings": ["Mild cardiomegaly.", "No effusion.", "Possible pneumonia."],
        }
    )


def test_label_dataset_adds_column_in_label_order() -> None:
    out = label_dataset(_ds(), teacher=RuleTeacher())
    assert out.column_names == ["id", "findings", "teacher_labels"]
    labels = out["teacher_labels"]
    assert labels[0][CHEXPERT.index("Cardiomegaly")] == 1
    assert labels[1][CHEXPERT.index("Pleural Effusion")] == 0
    assert labels[2][CHEXPERT.index("Pneumonia")] == -1
    assert labels[1][CHEXPERT.index("Edema")] is None


def test_label_dataset_custom_columns_and_replace() -> None:
    ds = _ds().rename_column("findings", "text")
    out = label_dataset(ds, teacher=RuleTeacher(), text_column="text", output_column="y")
    out2 = label_dataset(out, teacher=RuleTeacher(), text_column="text", output_column="y")
    assert out2["y"] == out["y"]
    with pytest.raises(KeyError, match="no column"):
        label_dataset(ds, teacher=RuleTeacher())


def test_abstentions_stay_none_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    ds = datasets.Dataset.from_dict({"findings": ["ok", "garbled", "ok too"]})
    res = label_dataset_with_stats(ds, teacher=CountingTeacher())
    assert res.dataset["teacher_labels"][1] is None
    assert res.n_abstained == 1 and res.n_labeled == 2
    assert "abstained on 1 of 3" in caplog.text


def test_cache_is_used_and_abstentions_are_retried(tmp_path) -> None:
    cache = LabelCache(tmp_path / "c.sqlite")
    ds = datasets.Dataset.from_dict({"findings": ["a", "garbled", "b", "a"]})
    teacher = CountingTeacher()
    first = label_dataset_with_stats(ds, teacher=teacher, cache=cache)
    assert teacher.calls == 3  # duplicate "a" labeled once
    assert first.n_from_cache == 0
    assert cache.count("counting", "1") == 2  # abstention not cached
    second = label_dataset_with_stats(ds, teacher=teacher, cache=cache)
    assert teacher.calls == 4  # only the abstention asked again
    assert second.n_from_cache == 3
    assert second.dataset["teacher_labels"] == first.dataset["teacher_labels"]
