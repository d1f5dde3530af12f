"""The teacher protocol: anything that turns report texts into label vectors.

A teacher has a ``name``, a ``version`` (part of the label cache key: a hash of the rule files, or
the prompt version plus the model id) and a ``label_set``; ``label_texts`` returns one vector per
text in the label set's order, with values ``1`` / ``0`` / ``-1`` / ``None`` (see
:mod:`dpcore.labels`), or ``None`` for the whole vector when the teacher abstains.

>>> from dpcore.labeling import RuleTeacher
>>> isinstance(RuleTeacher(), Teacher)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from dpcore.labels import LabelSet

LabelVector = list[int | None]


@runtime_checkable
class Teacher(Protocol):
    """What :func:`dpcore.labeling.label_dataset` needs from a labeler."""

    name: str
    version: str
    label_set: LabelSet

    def label_texts(self, texts: Sequence[str]) -> list[LabelVector | None]:
        """One label vector per text (``None`` = abstention)."""
        ...


def aggregate_no_finding(vector: LabelVector, label_set: LabelSet) -> LabelVector:
    """Set CheXpert's "No Finding": 1 when no label other than Support Devices is 1 or -1, else None.

    Label sets without a "No Finding" label are returned unchanged.

    >>> from dpcore.labels import CHEXPERT
    >>> v = [None] * 14
    >>> v[CHEXPERT.index("Support Devices")] = 1
    >>> aggregate_no_finding(v, CHEXPERT)[0]
    1
    >>> v[CHEXPERT.index("Edema")] = -1
    >>> aggregate_no_finding(v, CHEXPERT)[0] is None
    True
    """
    if "No Finding" not in label_set.labels:
        return vector
    nf = label_set.index("No Finding")
    skip = {nf}
    if "Support Devices" in label_set.labels:
        skip.add(label_set.index("Support Devices"))
    out = list(vector)
    finding = any(v in (1, -1) for i, v in enumerate(out) if i not in skip)
    out[nf] = None if finding else 1
    return out
