"""The label cache: atomic batches, resume after a killed run, no duplicates, key separation."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from dpcore.labeling import LabelCache, RuleTeacher, label_texts_cached

TEXTS = [f"Report {i}: mild cardiomegaly." if i % 2 else f"Report {i}: no effusion." for i in range(95)]

# A child process labels in batches of 10 and is killed (os._exit, no cleanup) in batch 4.
CHILD = textwrap.dedent(
    """
    import os, sys
    from dpcore.labeling import LabelCache, RuleTeacher, label_texts_cached

    class Dying(RuleTeacher):
        calls = 0
        def label_texts(self, texts):
            Dying.calls += 1
            if Dying.calls == 4:
                os._exit(9)
            return super().label_texts(texts)

    texts = [f"Report {i}: mild cardiomegaly." if i % 2 else f"Report {i}: no effusion." for i in range(95)]
    label_texts_cached(texts, teacher=Dying(), cache=LabelCache(sys.argv[1]), batch_size=10)
    """
)


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path) -> None:
    db = tmp_path / "labels.sqlite"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()
    cache = LabelCache(db)
    teacher = RuleTeacher()
    assert cache.count(teacher.name, teacher.version) == 30  # three committed batches, none partial

    class Counting(RuleTeacher):
        asked = 0

        def label_texts(self, texts):
            Counting.asked += len(texts)
            return super().label_texts(texts)

    resumed, n_cached = label_texts_cached(TEXTS, teacher=Counting(), cache=cache, batch_size=10)
    assert n_cached == 30 and Counting.asked == 65
    assert resumed == teacher.label_texts(TEXTS)
    rows = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT text_hash) FROM labels").fetchone()
    assert rows == (95, 95)


def test_keys_separate_teacher_and_version(tmp_path) -> None:
    cache = LabelCache(tmp_path / "c.sqlite")
    cache.put_many("rules", "v1", {"x": [1]})
    assert cache.get_many("rules", "v2", ["x"]) == {}
    assert cache.get_many("llm", "v1", ["x"]) == {}
    cache.put_many("rules", "v1", {"x": [0]})  # overwrite, not duplicate
    assert cache.get_many("rules", "v1", ["x"]) == {"x": [0]} and len(cache) == 1


def test_failed_batch_writes_nothing(tmp_path) -> None:
    db = tmp_path / "c.sqlite"
    cache = LabelCache(db)
    # A trigger makes the second row of the batch fail inside the transaction.
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON labels WHEN NEW.labels = '[2]' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    con.commit()
    con.close()
    with pytest.raises(sqlite3.DatabaseError, match="boom"):
        cache.put_many("rules", "v1", {"a": [1], "b": [2]})
    assert len(cache) == 0  # the first row was rolled back with the batch
    cache.put_many("rules", "v1", {"a": [1]})
    assert len(cache) == 1
