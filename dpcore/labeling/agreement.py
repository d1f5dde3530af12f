"""Agreement of a teacher with ground truth: per-label precision, recall, F1, Cohen's kappa.

Both sides are CheXpert-scheme vectors (1 / 0 / -1 / None). They are binarized with the same
uncertainty policy (:func:`dpcore.labels.binarize`); under ``ignore`` a label is left out wherever
either side is uncertain. Abstentions (a ``None`` vector) are left out and counted.

>>> from dpcore.labels import CHEXPERT
>>> truth = [[None] * 13 + [1], [None] * 13 + [None]]
>>> pred = [[None] * 13 + [1], [None] * 13 + [1]]
>>> df = agreement(truth, pred, label_set=CHEXPERT)
>>> float(df.loc["Support Devices", "precision"]), float(df.loc["Support Devices", "recall"])
(0.5, 1.0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

from dpcore.labeling.base import LabelVector
from dpcore.labels import LabelSet, UncertaintyPolicy, binarize

VALUE_NAMES = {1: "positive", 0: "negative", -1: "uncertain", None: "absent"}


def _pairs(
    truth: Sequence[LabelVector | None], predicted: Sequence[LabelVector | None]
) -> list[tuple[LabelVector, LabelVector]]:
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} vectors, predicted {len(predicted)}")
    return [
        (list(t), list(p)) for t, p in zip(truth, predicted, strict=True) if t is not None and p is not None
    ]


def agreement(
    truth: Sequence[LabelVector | None],
    predicted: Sequence[LabelVector | None],
    *,
    label_set: LabelSet,
    policy: UncertaintyPolicy = "u-ones",
) -> pd.DataFrame:
    """One row per label (plus ``micro`` and ``macro`` rows): precision, recall, F1, kappa, support.

    ``support`` is the number of positive truth values after binarization; ``n`` the reports
    compared for that label. Kappa is NaN where it is undefined (one class only on both sides).
    """
    pairs = _pairs(truth, predicted)
    k = len(label_set)
    yt = np.zeros((len(pairs), k))
    yp = np.zeros((len(pairs), k))
    mask = np.ones((len(pairs), k), dtype=bool)
    for r, (t, p) in enumerate(pairs):
        if len(t) != k or len(p) != k:
            raise ValueError(f"vector of length {len(t)}/{len(p)} for a {k}-label set")
        tt, mt = binarize(t, policy=policy)
        pp, mp = binarize(p, policy=policy)
        yt[r], yp[r] = tt, pp
        mask[r] = np.asarray(mt, dtype=bool) & np.asarray(mp, dtype=bool)
    rows = []
    for j, label in enumerate(label_set.labels):
        a, b = yt[mask[:, j], j], yp[mask[:, j], j]
        p, r, f, _ = precision_recall_fscore_support(a, b, average="binary", zero_division=0.0)
        kappa = _kappa(a, b)
        rows.append((label, p, r, f, kappa, int(a.sum()), int(len(a))))
    df = pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "kappa", "support", "n"])
    df = df.set_index("label")
    a, b = yt[mask], yp[mask]
    p, r, f, _ = precision_recall_fscore_support(a, b, average="binary", zero_division=0.0)
    df.loc["micro"] = [p, r, f, _kappa(a, b), int(a.sum()), int(mask.sum())]
    per = df.iloc[:k]
    df.loc["macro"] = [
        per.precision.mean(),
        per.recall.mean(),
        per.f1.mean(),
        per.kappa.mean(),
        int(per.support.sum()),
        int(per.n.sum()),
    ]
    df["support"] = df["support"].astype(int)
    df["n"] = df["n"].astype(int)
    return df


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or (len(set(a.tolist())) < 2 and len(set(b.tolist())) < 2):
        return float("nan")
    return float(cohen_kappa_score(a, b))


def value_confusion(
    truth: Sequence[LabelVector | None],
    predicted: Sequence[LabelVector | None],
    *,
    label_set: LabelSet,
    label: str | None = None,
) -> pd.DataFrame:
    """Counts of (truth value, predicted value) in the four-valued scheme, over all labels or one.

    The ``uncertain`` row shows the fate of uncertain mentions (kept uncertain, read as positive or
    negative, or missed).

    >>> from dpcore.labels import CTRATE
    >>> t = [[-1] + [None] * 17]
    >>> df = value_confusion(t, [[1] + [None] * 17], label_set=CTRATE, label="Medical material")
    >>> int(df.loc["uncertain", "positive"])
    1
    """
    cols = [label_set.index(label)] if label is not None else range(len(label_set))
    counts: Counter[tuple[str, str]] = Counter()
    for t, p in _pairs(truth, predicted):
        for j in cols:
            counts[(VALUE_NAMES[t[j]], VALUE_NAMES[p[j]])] += 1
    names = list(VALUE_NAMES.values())
    data = [[counts[(a, b)] for b in names] for a in names]
    df = pd.DataFrame(data, index=pd.Index(names, name="truth"), columns=pd.Index(names, name="teacher"))
    return df
