"""Label sets and the value convention shared by every part of dpcore.

A label value follows the CheXpert scheme: ``1`` positive, ``0`` negative, ``-1`` uncertain and
``None`` not mentioned. Training needs binary targets; an *uncertainty policy* says how to get them.

>>> CHEXPERT.name, len(CHEXPERT)
('chexpert', 14)
>>> CHEXPERT.labels[0], CTRATE.labels[-1]
('No Finding', 'Interlobular septal thickening')
>>> binarize([1, 0, -1, None], policy="u-ones")
([1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0])
>>> binarize([1, 0, -1, None], policy="ignore")
([1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LabelValue = int | None  # 1 positive, 0 negative, -1 uncertain, None not mentioned
UncertaintyPolicy = Literal["u-ones", "u-zeros", "ignore"]
UNCERTAINTY_POLICIES: tuple[str, ...] = ("u-ones", "u-zeros", "ignore")
VALID_VALUES: frozenset[LabelValue] = frozenset({1, 0, -1, None})


@dataclass(frozen=True)
class LabelSet:
    """An ordered, named set of labels (the order is the order of every label vector)."""

    name: str
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, label: str) -> int:
        """Position of ``label``; raises ``KeyError`` naming the label set if it is unknown."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"{label!r} is not a label of the {self.name} label set") from None


CHEXPERT = LabelSet(
    "chexpert",
    (
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Lesion",
        "Lung Opacity",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    ),
)

CTRATE = LabelSet(
    "ctrate",
    (
        "Medical material",
        "Arterial wall calcification",
        "Cardiomegaly",
        "Pericardial effusion",
        "Coronary artery wall calcification",
        "Hiatal hernia",
        "Lymphadenopathy",
        "Emphysema",
        "Atelectasis",
        "Lung nodule",
        "Lung opacity",
        "Pulmonary fibrotic sequela",
        "Pleural effusion",
        "Mosaic attenuation pattern",
        "Peribronchial thickening",
        "Consolidation",
        "Bronchiectasis",
        "Interlobular septal thickening",
    ),
)

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (CHEXPERT, CTRATE)}


def get_label_set(name: str) -> LabelSet:
    """The label set called ``name`` (``chexpert`` or ``ctrate``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}") from None


def binarize(
    values: Sequence[LabelValue], *, policy: UncertaintyPolicy = "u-ones"
) -> tuple[list[float], list[float]]:
    """Binary targets and a loss mask from CheXpert-style values.

    ``u-ones`` reads uncertain as positive, ``u-zeros`` as negative, ``ignore`` masks it out of the
    loss. Not mentioned is negative under every policy.
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"unknown uncertainty policy {policy!r}; use one of {UNCERTAINTY_POLICIES}")
    targets: list[float] = []
    mask: list[float] = []
    for v in values:
        if v not in VALID_VALUES:
            raise ValueError(f"label value {v!r} is outside the scheme (1, 0, -1, None)")
        if v == -1:
            targets.append(1.0 if policy == "u-ones" else 0.0)
            mask.append(0.0 if policy == "ignore" else 1.0)
        else:
            targets.append(1.0 if v == 1 else 0.0)
            mask.append(1.0)
    return targets, mask
