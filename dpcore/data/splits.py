"""Seeded patient-level train/validation/test splits, and the check that no patient crosses splits.

>>> from dpcore.data.synthetic import generate_reports
>>> dd = split_by_patient(generate_reports(n=200, seed=0), seed=0)
>>> sorted(dd), sum(len(d) for d in dd.values())
(['test', 'train', 'validation'], 200)
>>> check_no_patient_leak(dd)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np

from dpcore.data.schema import DataError

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


def split_by_patient(
    ds: datasets.Dataset, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> datasets.DatasetDict:
    """Split ``ds`` into ``train``, ``validation`` and ``test`` so that each patient is in one split.

    Patients are shuffled with ``seed`` and assigned in order until each split holds about its
    ``fractions`` share of the *reports*. Metadata (:func:`dataset_meta`) is kept in every split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    pids = np.asarray(ds["patient_id"], dtype=object)
    uniq, inverse, counts = np.unique(pids.astype(str), return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    # Cut the shuffled patients where the cumulative report count crosses each fraction.
    cum = np.cumsum(counts[order]) / max(len(pids), 1)
    edges = np.cumsum(fractions)[:2]
    split_of_rank = np.searchsorted(edges, cum, side="left")
    split_of_rank = np.minimum(split_of_rank, 2)
    split_of_patient = np.empty(len(uniq), dtype=int)
    split_of_patient[order] = split_of_rank
    split_of_row = split_of_patient[inverse]
    dd = datasets.DatasetDict(
        {name: ds.select(np.flatnonzero(split_of_row == k)) for k, name in enumerate(SPLITS)}
    )
    check_no_patient_leak(dd)
    return dd


def check_no_patient_leak(splits: Mapping[str, datasets.Dataset]) -> None:
    """Raise :class:`DataError` naming a patient that appears in two splits (``None`` if there is none)."""
    owner: dict[str, str] = {}
    for name, d in splits.items():
        for pid in set(d["patient_id"]):
            if pid in owner and owner[pid] != name:
                raise DataError(f"patient {pid!r} is in both {owner[pid]!r} and {name!r}", field="patient_id")
            owner[pid] = name
