"""Report context that changes a classified mention: benign explanations and yielding soft signs.

Both follow radiologists' wording rather than CheXpert's parse (see the suite files' headers):

- a nodule explained as something else ("nodular density represents the nipple", "possible nodule,
  likely summation of vessels") is no lesion, or an uncertain one where the explanation is hedged;
- a soft sign of a finding (CheXpert's "vascular congestion" for edema) yields where the report rules
  the finding out explicitly ("congestion without frank edema"): the finding is 0 and the sign is
  kept as another abnormal finding.

>>> t = "the nodular density at the right base represents the nipple."
>>> explained_value(t, len("the nodular density"), [(t.index("nipple"), len(t) - 1)], len(t), 1) is None
True
>>> t = "small nodule, which could represent overlap of vessels."
>>> explained_value(t, len("small nodule"), [(t.index("overlap"), t.index(" of"))], len(t), 1)
-1
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_GAP_WORDS = 12  # an explanation further from its nodule than this is about something else
# Words that present what follows as the explanation ("is a vessel", "due to the nipple", "likely ...").
_EXPLAINS = re.compile(
    r"(?<![a-z])(?:is|are|was|were|be|been|represents?|representing|reflects?|reflecting|corresponds?|"
    r"corresponding|due|from|caused|secondary|related|attributable|consistent|compatible|keeping|likely|"
    r"probably|possibly|perhaps|presumably|confirm\w*)(?![a-z])"
)
_HEDGE = re.compile(
    r"(?<![a-z])(?:may|might|could|possibl[ey]|probabl[ey]|likely|perhaps|presumabl[ey]|questionabl[ey]|"
    r"suspect\w*|favou?r\w*)(?![a-z])"
)
# A new clause between nodule and explanation: the explanation belongs to something else.
_NEW_CLAUSE = re.compile(r", and |(?<![a-z])(?:there (?:is|are|was|were)|but|while|whereas)(?![a-z])")
_TAIL_WORDS = 3  # the explaining word sits right before the explanation


def explained_value(t: str, e: int, hits: Sequence[tuple[int, int]], sent_end: int, value: int) -> int | None:
    """The value of a positive or uncertain mention ending at ``e`` once a benign explanation is read.

    ``hits`` are the spans of the label's benign phrases (sorted). The first one after the mention in
    its sentence counts when an explaining word stands among the three words before it: then the
    mention is dropped (None), or uncertain (-1) where the gap hedges. An explanation stated without
    a hedge settles an earlier doubt too ("the suspected nodule is a vessel seen end-on").
    """
    for bs, _be in hits:
        if bs < e:
            continue
        if bs >= sent_end:
            break
        gap = t[e:bs]
        tail = " ".join(gap.split()[-_TAIL_WORDS:])
        if gap.count(" ") > MAX_GAP_WORDS or _NEW_CLAUSE.search(gap) or not _EXPLAINS.search(tail):
            return value
        return -1 if _HEDGE.search(gap) else None
    return value


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
