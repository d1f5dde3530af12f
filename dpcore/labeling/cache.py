"""An on-disk label cache (SQLite) keyed by teacher name, teacher version and report hash.

Each batch of labels is written in one transaction, so a run killed midway keeps every batch it
committed and the next run labels only what is missing; the primary key makes a label impossible
to duplicate. Abstentions are not cached: a later run asks the teacher again.

>>> import tempfile, os
>>> cache = LabelCache(os.path.join(tempfile.mkdtemp(), "labels.sqlite"))
>>> cache.put_many("rules", "v1", {"a report": [1, None, -1]})
>>> cache.get_many("rules", "v1", ["a report", "another"])
{'a report': [1, None, -1]}
>>> len(cache)
1
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from dpcore.labeling.base import LabelVector

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    teacher TEXT NOT NULL,
    version TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    labels TEXT NOT NULL,
    PRIMARY KEY (teacher, version, text_hash)
)
"""


def text_hash(text: str) -> str:
    """SHA-256 of a report text (the cache never stores the text itself).

    >>> text_hash("No effusion.")[:8]
    '32aedc5e'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LabelCache:
    """Labels of (teacher, version, report) on disk; safe to reuse across runs and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open explicit transactions, one per batch.
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"LabelCache({str(self.path)!r})"

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def get_many(self, teacher: str, version: str, texts: Iterable[str]) -> dict[str, LabelVector]:
        """The cached vectors of those ``texts`` that have one (text -> vector)."""
        by_hash: dict[str, list[str]] = {}
        for t in texts:
            by_hash.setdefault(text_hash(t), []).append(t)
        out: dict[str, LabelVector] = {}
        hashes = list(by_hash)
        for i in range(0, len(hashes), 500):  # stay under SQLite's variable limit
            chunk = hashes[i : i + 500]
            rows = self._conn.execute(
                "SELECT text_hash, labels FROM labels WHERE teacher=? AND version=? AND text_hash IN "
                f"({','.join('?' * len(chunk))})",
                (teacher, version, *chunk),
            )
            for h, labels in rows:
                for t in by_hash[h]:
                    out[t] = json.loads(labels)
        return out

    def put_many(self, teacher: str, version: str, labels: Mapping[str, LabelVector]) -> None:
        """Store vectors atomically (all of them or none); existing keys are overwritten."""
        rows = [(teacher, version, text_hash(t), json.dumps(v)) for t, v in labels.items()]
        if not rows:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def count(self, teacher: str, version: str) -> int:
        """How many labels this teacher version has cached."""
        q = "SELECT COUNT(*) FROM labels WHERE teacher=? AND version=?"
        return int(self._conn.execute(q, (teacher, version)).fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()
