"""Report context that changes a classified mention: soft signs that yield.

It follows radiologists' wording rather than CheXpert's parse (see the suite files' headers):

- a soft sign of a finding (CheXpert's "vascular congestion" for edema) yields where the report rules
  the finding out explicitly ("congestion without frank edema"): the finding is 0 and the sign is
  kept as another abnormal finding.
"""

from __future__ import annotations

from collections.abc import Sequence


def yield_soft_signs(
    mentions: list[tuple[int, int, int, int]], soft: Sequence[bool], other: int | None
) -> list[tuple[int, int, int, int]]:
    """Soft-sign mentions of a label that the report negates explicitly move to ``other``.

    ``mentions`` are (label, value, start, end), ``soft[i]`` whether mention i is a soft sign;
    ``other`` is the label index that collects other abnormal findings (No Finding), or None to drop.
    """
    negated = {m[0] for m, is_soft in zip(mentions, soft, strict=True) if m[1] == 0 and not is_soft}
    out = []
    for m, is_soft in zip(mentions, soft, strict=True):
        if is_soft and m[1] != 0 and m[0] in negated:
            if other is not None:
                out.append((other, -1, m[2], m[3]))
            continue
        out.append(m)
    return out
