"""How hard a labelled corpus is: a bag-of-words logistic-regression baseline on the Findings.

If this baseline nearly solves the synthetic corpus (macro-F1 >= 0.98), the corpus is too easy to say
anything about models or privacy. Binary view: uncertain counts as positive (``u-ones``).

>>> from dpcore.data.synthetic import generate_reports
>>> r = bow_baseline(generate_reports(n=400, seed=0), seed=0)
>>> 0.0 < r["macro_f1"] < 0.98
True
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from dpcore.data.schema import binary_labels, dataset_meta
from dpcore.data.splits import split_by_patient
from dpcore.labels import UncertaintyPolicy, get_label_set

MAX_MACRO_F1 = 0.98  # above this the corpus is too easy


def bow_baseline(
    ds: datasets.Dataset, *, seed: int = 0, policy: UncertaintyPolicy = "u-ones", ngram_max: int = 1
) -> dict[str, Any]:
    """Train one logistic regression per label on word counts of the Findings (patient-level 80/20
    split of ``ds``) and report test macro, weighted and per-label F1 against ``ds``'s labels."""

    dd = split_by_patient(ds, fractions=(0.8, 0.0, 0.2), seed=seed)
    train, test = dd["train"], dd["test"]
    vec = CountVectorizer(ngram_range=(1, ngram_max), min_df=2)
    xtr, xte = vec.fit_transform(train["findings"]), vec.transform(test["findings"])
    ytr, yte = binary_labels(train, policy=policy), binary_labels(test, policy=policy)
    pred = np.zeros_like(yte)
    for j in range(ytr.shape[1]):
        if ytr[:, j].min() == ytr[:, j].max():  # a label with one class in train: predict that class
            pred[:, j] = ytr[0, j]
            continue
        clf = LogisticRegression(solver="liblinear", max_iter=2000, random_state=seed).fit(xtr, ytr[:, j])
        pred[:, j] = clf.predict(xte)
    labels = get_label_set(dataset_meta(ds).label_set).labels
    per = f1_score(yte, pred, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(yte, pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(yte, pred, average="weighted", zero_division=0)),
        "per_label_f1": dict(zip(labels, map(float, per), strict=True)),
        "n_train": len(train),
        "n_test": len(test),
        "too_easy": bool(f1_score(yte, pred, average="macro", zero_division=0) >= MAX_MACRO_F1),
    }
