"""Agreement of a teacher with ground truth: per-label precision, recall, F1, Cohen's kappa, and
what drove each No Finding = 0 (:func:`no_finding_drivers`).

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


def no_finding_reasons(
    predicted: Sequence[LabelVector | None],
    *,
    label_set: LabelSet,
    other: Sequence[Sequence[str]] | None = None,
) -> list[list[str]]:
    """Per report, what drove No Finding to 0 (blank): labels at 1 or -1 other than Support Devices.

    ``other`` adds the teacher's own reasons per report (``RuleTeacher.no_finding_drivers`` also
    names CheXpert's other findings, which are not labels). Empty where No Finding is 1, and for
    label sets without No Finding.

    >>> from dpcore.labels import CHEXPERT
    >>> v = [None] * 14
    >>> v[CHEXPERT.index("Edema")], v[CHEXPERT.index("Support Devices")] = -1, 1
    >>> no_finding_reasons([v, [1] + [None] * 13], label_set=CHEXPERT)
    [['Edema'], []]
    """
    if "No Finding" not in label_set.labels:
        return [[] for _ in predicted]
    nf = label_set.index("No Finding")
    skip = {nf} | ({label_set.index("Support Devices")} if "Support Devices" in label_set.labels else set())
    out = []
    for r, p in enumerate(predicted):
        if p is None or p[nf] == 1:
            out.append([])
            continue
        reasons = [lab for j, lab in enumerate(label_set.labels) if j not in skip and p[j] in (1, -1)]
        if other is not None:
            reasons += [x for x in other[r] if x not in reasons]
        out.append(reasons)
    return out


def no_finding_drivers(
    truth: Sequence[LabelVector | None],
    predicted: Sequence[LabelVector | None],
    *,
    label_set: LabelSet,
    other: Sequence[Sequence[str]] | None = None,
) -> pd.DataFrame:
    """What drove the teacher's No Finding = 0, counted over reports (one row per driver).

    ``reports``: reports where the driver is among the reasons; ``sole``: where it is the only one;
    ``truth_no_finding``: of those, reports whose ground truth says No Finding = 1 (the driver is
    where teacher and truth part). See :func:`no_finding_reasons` for ``other``.

    >>> from dpcore.labels import CHEXPERT
    >>> p = [[None] * 9 + [1] + [None] * 4, [None] * 14]
    >>> t = [[1] + [None] * 13, [1] + [None] * 13]
    >>> no_finding_drivers(t, p, label_set=CHEXPERT, other=[[], ["other finding: granuloma"]]).to_dict("index")
    {'Pneumothorax': {'reports': 1, 'sole': 1, 'truth_no_finding': 1}, 'other finding: granuloma': {'reports': 1, 'sole': 1, 'truth_no_finding': 1}}
    """
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} vectors, predicted {len(predicted)}")
    reasons = no_finding_reasons(predicted, label_set=label_set, other=other)
    nf = label_set.index("No Finding") if "No Finding" in label_set.labels else None
    rows: dict[str, list[int]] = {}
    for t, why in zip(truth, reasons, strict=True):
        for driver in why:
            row = rows.setdefault(driver, [0, 0, 0])
            row[0] += 1
            row[1] += len(why) == 1
            row[2] += int(t is not None and nf is not None and t[nf] == 1)
    df = pd.DataFrame.from_dict(rows, orient="index", columns=["reports", "sole", "truth_no_finding"])
    df.index.name = "driver"
    return df.sort_values(["reports", "sole"], ascending=False, kind="stable")
