"""Add a teacher's labels to a report dataset, through the label cache.

:func:`label_dataset` returns the dataset with a new list-valued column (one vector per report
in the label set's order; ``None`` where the teacher abstained). The counts (labeled, from cache,
abstained) are logged at INFO level and returned by :func:`label_dataset_with_stats`.

>>> import datasets
>>> from dpcore.labeling import RuleTeacher
>>> ds = datasets.Dataset.from_dict({"id": ["a", "b"], "findings": ["No effusion.", "Cardiomegaly."]})
>>> res = label_dataset_with_stats(ds, teacher=RuleTeacher())
>>> res.dataset["teacher_labels"][1][2], res.n_labeled, res.n_abstained
(1, 2, 0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
from tqdm import tqdm

from dpcore.data import dataset_meta
from dpcore.labeling.base import LabelVector, Teacher
from dpcore.labeling.cache import LabelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelingResult:
    """A labeled dataset and what happened on the way."""

    dataset: datasets.Dataset
    n_labeled: int  # reports with a label vector (from the teacher or the cache)
    n_from_cache: int
    n_abstained: int  # reports the teacher would not label (their vector is None)


def label_texts_cached(
    texts: Sequence[str],
    *,
    teacher: Teacher,
    cache: LabelCache | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[list[LabelVector | None], int]:
    """Labels of ``texts`` (cache first, teacher for the rest, written back batch by batch).

    Returns the vectors and how many came from the cache. Identical texts are labeled once. ``progress``
    shows a bar over the texts the teacher labels (on a terminal only), moved batch by batch.
    """
    texts = ["" if t is None else str(t) for t in texts]
    cached = cache.get_many(teacher.name, teacher.version, texts) if cache is not None else {}
    todo = list(dict.fromkeys(t for t in texts if t not in cached))
    fresh: dict[str, LabelVector | None] = {}
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
    bar = tqdm(
        total=len(todo), desc=f"labeling ({teacher.name})", unit="report", disable=None if progress else True
    )
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        vectors = teacher.label_texts(batch)
        if len(vectors) != len(batch):
            msg = f"teacher {teacher.name} returned {len(vectors)} vectors for {len(batch)} texts"
            raise RuntimeError(msg)
        got = dict(zip(batch, vectors, strict=True))
        fresh.update(got)
        if cache is not None:
            # One transaction per batch: a killed run loses at most the batch in flight.
            cache.put_many(teacher.name, teacher.version, {t: v for t, v in got.items() if v is not None})
        bar.update(len(batch))
    bar.close()
    n_cached = sum(1 for t in texts if t in cached)
    return [cached[t] if t in cached else fresh[t] for t in texts], n_cached


def label_dataset_with_stats(
    ds: datasets.Dataset,
    *,
    teacher: Teacher,
    text_column: str = "findings",
    output_column: str = "teacher_labels",
    cache: LabelCache | None = None,
    batch_size: int = 256,
    credentialed: bool | None = None,
    progress: bool = False,
) -> LabelingResult:
    """Like :func:`label_dataset`, and also return the counts (``progress``: a bar on a terminal)."""
    if text_column not in ds.column_names:
        raise KeyError(f"no column {text_column!r} in the dataset (columns: {ds.column_names})")
    check = getattr(teacher, "check_source", None)
    if check is not None:
        # Teachers that send text somewhere (LLM endpoints) must know whether it is credentialed.
        check(credentialed=source_is_credentialed(ds) if credentialed is None else credentialed)
    vectors, n_cached = label_texts_cached(
        ds[text_column], teacher=teacher, cache=cache, batch_size=batch_size, progress=progress
    )
    n_abstained = sum(v is None for v in vectors)
    if n_abstained:
        log.warning("teacher %s abstained on %d of %d reports", teacher.name, n_abstained, len(vectors))
    log.info(
        "teacher %s (%s): %d reports, %d from cache, %d abstentions",
        teacher.name,
        teacher.version,
        len(vectors),
        n_cached,
        n_abstained,
    )
    if output_column in ds.column_names:
        ds = ds.remove_columns(output_column)
    feature = datasets.Sequence(datasets.Value("int8"), length=len(teacher.label_set))
    ds = ds.add_column(output_column, vectors, feature=feature)
    return LabelingResult(ds, len(vectors) - n_abstained, n_cached, n_abstained)


def source_is_credentialed(ds: datasets.Dataset) -> bool | None:
    """``credentialed`` from the dataset's dpcore metadata, or None when it carries none."""
    try:
        return dataset_meta(ds).credentialed
    except ValueError:
        return None


def label_dataset(
    ds: datasets.Dataset,
    *,
    teacher: Teacher,
    text_column: str = "findings",
    output_column: str = "teacher_labels",
    cache: LabelCache | None = None,
    credentialed: bool | None = None,
) -> datasets.Dataset:
    """``ds`` with a column of the teacher's label vectors (abstentions stay ``None``, and are logged).

    A teacher that sends text off the machine is told whether the source is ``credentialed``
    (this keyword, else the dataset's metadata, else unknown = treated as credentialed) and
    refuses with :class:`dpcore.labeling.llm.CredentialedDataError` where it must.

    >>> import datasets
    >>> from dpcore.labeling import RuleTeacher
    >>> ds = datasets.Dataset.from_dict({"findings": ["Possible pneumonia."]})
    >>> label_dataset(ds, teacher=RuleTeacher())["teacher_labels"][0][7]
    -1
    """
    return label_dataset_with_stats(
        ds,
        teacher=teacher,
        text_column=text_column,
        output_column=output_column,
        cache=cache,
        credentialed=credentialed,
    ).dataset
