"""Canaries for the one-run audit: reports of random vocabulary words with random label vectors.

A canary's labels must be unlearnable from the rest of the training data, so that only the canary itself can
teach the model its labels: then a low loss on a canary is evidence that it was trained on. Two ways give
that: synthetic reports with random labels, or out-of-distribution text with random labels. We take the
second. A synthetic report's text *predicts* labels (its findings), and what the model learns from the other
reports pulls its prediction toward those, against the random ones: that hides memorisation and weakens the
audit. Random words resemble no report, so the model's only evidence about a canary's labels is the canary,
and a handful of rare tokens make each canary easy to tell apart. The audit then measures the mechanism
close to its worst case (a distinctive example), which is what a lower bound on ε is for.

>>> ds = make_canaries(m=3, label_set="chexpert", model="minilm-l6", seed=0)
>>> len(ds), ds.column_names
(3, ['id', 'patient_id', 'findings', 'impression', 'text', 'labels', 'teacher_labels'])
>>> set(v for row in ds["teacher_labels"] for v in row) <= {0, 1}, ds["labels"] == ds["teacher_labels"]
(True, True)
"""

from __future__ import annotations

from functools import lru_cache

import datasets
import numpy as np

from dpcore.data.schema import make_dataset
from dpcore.labels import get_label_set
from dpcore.models import load_tokenizer

CANARY_KIND = "random vocabulary words, random labels"
WORDS_PER_CANARY = 16
ID_PREFIX = "canary-"


@lru_cache(maxsize=8)
def vocabulary_words(model: str, *, min_length: int = 4) -> tuple[str, ...]:
    """Whole alphabetic words of the tokenizer's vocabulary (no sub-word pieces or special tokens)."""
    vocab = load_tokenizer(model).get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and w.islower() and len(w) >= min_length)
    if len(words) < 100:
        raise ValueError(
            f"model {model!r}'s vocabulary has only {len(words)} whole words to draw canaries from"
        )
    return tuple(words)


def make_canaries(
    *, m: int, label_set: str, model: str, seed: int = 0, words: int = WORDS_PER_CANARY
) -> datasets.Dataset:
    """``m`` canaries in the common schema, with a ``teacher_labels`` column equal to their random labels.

    Each canary is ``words`` words drawn uniformly from the tokenizer's vocabulary, and a label vector of
    independent fair coins (1 positive, 0 negative) over the label set. Ids and patient ids are unique
    (``canary-<i>``), so each canary is its own privacy unit whether the unit is a report or a patient.
    """
    if m <= 0:
        raise ValueError(f"m (the number of canaries) must be positive, got {m}")
    rng = np.random.default_rng(seed)
    vocab = vocabulary_words(model)
    n_labels = len(get_label_set(label_set))
    findings = [" ".join(vocab[j] for j in rng.integers(len(vocab), size=words)) + "." for _ in range(m)]
    labels = rng.integers(0, 2, size=(m, n_labels)).tolist()
    ids = [f"{ID_PREFIX}{i}" for i in range(m)]
    ds = make_dataset(
        {
            "id": ids,
            "patient_id": ids,
            "findings": findings,
            "impression": [""] * m,
            "text": [f"FINDINGS: {f}" for f in findings],
            "labels": labels,
        },
        label_set=label_set,
        source="canaries",
        extra={"canaries": CANARY_KIND},
    )
    feature = datasets.Sequence(datasets.Value("int8"), length=n_labels)
    return ds.add_column("teacher_labels", labels, feature=feature)


def append_canaries(
    train: datasets.Dataset, canaries: datasets.Dataset, included: np.ndarray
) -> datasets.Dataset:
    """``train`` with the canaries where ``included`` is True appended (cast to ``train``'s columns)."""
    chosen = canaries.select(np.flatnonzero(included))
    chosen = chosen.select_columns(train.column_names)
    if chosen.features != train.features:
        chosen = chosen.cast(train.features)
    return datasets.concatenate_datasets([train, chosen], info=train.info)
