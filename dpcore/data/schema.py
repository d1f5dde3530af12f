"""The common report schema and the metadata that travels with every report data set.

Every generator and loader returns a :class:`datasets.Dataset` with the columns ``id`` (unique str),
``patient_id``, ``findings``, ``impression``, ``text`` (the whole report) and ``labels`` (one value per
label of the label set, in its order, in the CheXpert scheme of :mod:`dpcore.labels`). The label set,
the source and whether the source is credentialed travel as JSON in ``ds.info.description``, which
``datasets`` keeps through ``map``, ``select``, ``filter`` and ``save_to_disk``.

>>> ds = make_dataset(
...     {"id": ["a"], "patient_id": ["p1"], "findings": ["No effusion."], "impression": [""],
...      "text": ["FINDINGS: No effusion."], "labels": [[None] * 14]},
...     label_set="chexpert", source="example")
>>> dataset_meta(ds)
DatasetMeta(label_set='chexpert', source='example', credentialed=False, extra={})
>>> binary_labels(ds).shape
(1, 14)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from dpcore.labels import VALID_VALUES, UncertaintyPolicy, get_label_set

log = logging.getLogger("dpcore.data")

COLUMNS: tuple[str, ...] = ("id", "patient_id", "findings", "impression", "text", "labels")
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "findings": datasets.Value("string"),
        "impression": datasets.Value("string"),
        "text": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("int8")),
    }
)
_META_KEY = "dpcore"


class DataError(ValueError):
    """Bad input data; the message names the file, the row and the field where known."""

    def __init__(
        self, message: str, *, file: str | None = None, row: int | str | None = None, field: str | None = None
    ) -> None:
        where = ", ".join(
            f"{k} {v}" for k, v in (("file", file), ("row", row), ("field", field)) if v is not None
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.field = file, row, field


@dataclass(frozen=True)
class DatasetMeta:
    """What a report data set is: its label set, its source, and whether its text is credentialed.

    ``extra`` holds source-specific facts (load counts, skip reasons, planted canaries).
    """

    label_set: str
    source: str
    credentialed: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                _META_KEY: {
                    "label_set": self.label_set,
                    "source": self.source,
                    "credentialed": self.credentialed,
                    "extra": self.extra,
                }
            }
        )


@dataclass
class LoadLog:
    """Counts of rows kept and rows left out (by reason), so that nothing is dropped silently."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str, *, file: str | None = None, row: int | str | None = None) -> None:
        self.skipped[reason] += 1
        log.debug("%s: skipped %s row %s: %s", self.source, file, row, reason)

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "skipped": dict(sorted(self.skipped.items()))}

    def check_kept(self, *, file: str, read: int, unit: str = "rows") -> None:
        """Refuse a load that kept no report: nothing to read (a header without rows), or every one of the
        ``read`` rows left out (the reasons are named)."""
        if self.kept:
            return
        if not read:
            raise DataError(f"no {unit} found: nothing to load", file=file)
        why = "; ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "no reason recorded"
        raise DataError(f"no report kept: all {read} {unit} were left out ({why})", file=file)

    def summary(self) -> str:
        left = sum(self.skipped.values())
        why = "; ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return f"{self.source}: kept {self.kept} reports, left out {left} ({why})"


def dataset_meta(ds: datasets.Dataset | datasets.DatasetDict) -> DatasetMeta:
    """Read the metadata back from a report data set (or from the first split of a DatasetDict)."""
    if isinstance(ds, datasets.DatasetDict):
        ds = next(iter(ds.values()))
    try:
        meta = json.loads(ds.info.description or "")[_META_KEY]
    except (ValueError, KeyError, TypeError):
        raise ValueError("this Dataset carries no dpcore metadata; build it with make_dataset") from None
    return DatasetMeta(meta["label_set"], meta["source"], bool(meta["credentialed"]), meta.get("extra", {}))


def make_dataset(
    records: Mapping[str, Sequence[Any]],
    *,
    label_set: str,
    source: str,
    credentialed: bool = False,
    extra: Mapping[str, Any] | None = None,
    file: str | None = None,
) -> datasets.Dataset:
    """A Dataset in the common schema from column lists; checks ids, label length and label values.

    ``file`` only names the input in error messages.
    """
    missing = [c for c in COLUMNS if c not in records]
    if missing:
        raise DataError(f"missing columns {missing}", file=file)
    n_labels = len(get_label_set(label_set))
    ids = records["id"]
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise DataError(f"duplicate id {rid!r} (first at row {seen[rid]})", file=file, row=i, field="id")
        seen[rid] = i
    for i, labels in enumerate(records["labels"]):
        if len(labels) != n_labels:
            raise DataError(
                f"{len(labels)} labels, the {label_set} set has {n_labels}", file=file, row=i, field="labels"
            )
        for v in labels:
            if v not in VALID_VALUES:
                raise DataError(
                    f"label value {v!r} is outside the scheme (1, 0, -1, None)",
                    file=file,
                    row=i,
                    field="labels",
                )
    meta = DatasetMeta(label_set, source, credentialed, dict(extra or {}))
    cols = {c: list(records[c]) for c in COLUMNS}
    return datasets.Dataset.from_dict(
        cols,
        features=FEATURES,
        info=datasets.DatasetInfo(description=meta.to_json(), features=FEATURES),
    )


def with_meta(ds: datasets.Dataset, **changes: Any) -> datasets.Dataset:
    """A copy of ``ds`` whose metadata has ``changes`` applied (``extra`` entries are merged)."""
    meta = dataset_meta(ds)
    extra = {**meta.extra, **changes.pop("extra", {})}
    new = DatasetMeta(**{**meta.__dict__, **changes, "extra": extra})
    info = ds.info.copy()
    info.description = new.to_json()
    return datasets.Dataset(ds.data, info=info, split=ds.split, fingerprint=ds._fingerprint)


def binary_labels(ds: datasets.Dataset, *, policy: UncertaintyPolicy = "u-ones") -> np.ndarray:
    """The binary view of the labels, shape ``[n, n_labels]``: 1 positive, 0 otherwise.

    Uncertain reads as 1 under ``u-ones`` and 0 under ``u-zeros`` and ``ignore`` (use
    :func:`dpcore.labels.binarize` for the mask); not mentioned is 0.
    """
    arr = np.array([[np.nan if v is None else v for v in row] for row in ds["labels"]], dtype=float)
    if arr.size == 0:
        return np.zeros((0, len(get_label_set(dataset_meta(ds).label_set))), dtype=np.int64)
    out = (arr == 1) | ((arr == -1) & (policy == "u-ones"))
    return out.astype(np.int64)
