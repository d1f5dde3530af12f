"""Scope of negation and uncertainty over coordinated lists, on lower-cased, single-spaced text.

CheXpert and NegBio read scope off a dependency parse: a negation governs its noun and every noun
conjoined with it ("no A, B, or C"), and stops at a new clause. Without a parser, the rule teacher
reads the same structure from the surface of the sentence:

- a *list separator* is ``", "``, ``" and "``, ``" or "``, ``" nor "``, ``" and/or "`` (with an optional
  comma); the words between separators are the list's items;
- a separator followed by a new subject and a verb that is not "seen / present / identified ..."
  opens a new clause (``", and the heart is enlarged"``): scope stops there;
- a comma or "and" followed by a word that opens a new assertion (a size, severity, laterality or
  change word: ``"no pneumothorax, small left effusion"``) stops scope too, unless the list closes with
  "or"/"nor" later on (``"no consolidation, large effusion, or pneumothorax"``: one negated list).

>>> t = "no focal consolidation, large effusion, or pneumothorax is identified."
>>> forward_in_scope(t, 2, t.index("pneumothorax"), t.index("."), window=12, max_words=30)
True
>>> t = "no pneumothorax, small left effusion."
>>> forward_in_scope(t, 2, t.index("effusion"), len(t) - 1, window=12, max_words=30)
False
>>> t = "pneumothorax, effusion, and consolidation are not identified."
>>> backward_in_scope(t, len("pneumothorax"), t.index("are not"), window=6, max_words=30)
True
"""

from __future__ import annotations

import re
from bisect import bisect_left

_SEP = re.compile(r",? (?:and/or|and|or|nor) |, ")
_CLOSING = re.compile(r",? (?:or|nor|and/or) ")
_OPENERS = (
    r"(?:a |an )?(?:mild|mildly|moderate|moderately|severe|severely|marked|markedly|minimal|minimally|slight|"
    r"slightly|small|smaller|large|larger|trace|tiny|subtle|dense|extensive|new|newly|stable|persistent|"
    r"persisting|unchanged|increased|increasing|decreased|decreasing|improved|improving|worsening|worsened|"
    r"interval|residual|bilateral|left|right|known|chronic|multiple|several|scattered|patchy|diffuse|\d|"
    # predicates that start a new assertion after a comma: "..., compatible with pneumothorax"
    r"compatible|consistent|in keeping|suggestive|concerning|worrisome|suspicious|likely|probably|possibly|"
    r"representing|reflecting|most likely)"
)
_OPENER = re.compile(_OPENERS + r"(?![a-z])")
_SIDE = re.compile(r"(?:left|right|bilateral)(?![a-z])")  # "resolution of the effusion and left atelectasis"
_COPULA = r"(?:is|are|was|were|has|have|had|appears?|remains?|measures?|persists?|demonstrates?|shows?)"
_EXISTENTIAL = (
    r"(?:seen|identified|present|noted|evident|demonstrated|visualized|visualised|appreciated|detected|"
    r"observed|apparent|visible|shown|found|depicted|suspected|excluded)"
)
# After a separator: up to four words, a verb, and not "(not) seen / present / ...".
_CLAUSE = re.compile(
    r"(?:[a-z0-9/'-]+ ){0,4}?"
    + _COPULA
    + r" (?!(?:not |no longer |also |again |still )?"
    + _EXISTENTIAL
    + r"\b)"
)
_HAS_COPULA = re.compile(r"(?<![a-z])(?:is|are|was|were|has|have|had)(?![a-z])")
_OR_GAP = re.compile(r",? (?:and/or|or) (?:[a-z0-9-]+ ){0,2}")


def _words(s: str) -> int:
    return s.count(" ")


def forward_in_scope(t: str, te: int, s: int, stop: int, *, window: int, max_words: int) -> bool:
    """Whether a pre-trigger ending at ``te`` governs the mention starting at ``s``.

    ``stop`` is where the trigger's scope ends anyway (sentence end or termination phrase after the
    trigger); ``window`` bounds the words before the first item, ``max_words`` the whole list.
    """
    if te >= s:
        return True  # the mention lies inside the trigger ("no focal consolidation to suggest ...")
    gap = t[te:s]
    if gap.startswith(", "):
        gap, te = gap[1:], te + 1  # a parenthetical trigger: "tiny, if any, left effusion"
    seps = list(_SEP.finditer(gap))
    if not seps:
        return _words(gap) <= window
    if _words(gap) > max_words or _words(gap[: seps[0].start()] + " ") > window:
        return False
    for sep in seps:
        at = te + sep.end()
        if _CLAUSE.match(t, at):
            return False
        # "no pneumothorax, small left effusion": a new assertion, unless the list closes with or/nor
        word = sep.group(0)
        opens = _CLOSING.fullmatch(word) is None and _OPENER.match(t, at)
        if opens and word == " and " and _SIDE.match(t, at):
            opens = None  # laterality after a bare "and" continues the list
        if opens and _CLOSING.search(t, at, stop) is None:
            return False
    return True


def backward_in_scope(t: str, e: int, ts: int, *, window: int, max_words: int) -> bool:
    """Whether a post-trigger starting at ``ts`` governs the mention ending at ``e``.

    The mention is the trigger's subject (within ``window`` words, no comma between), or an item of
    a list coordinated with the subject by and/or/nor ("A, B, and C are not seen"); a list item that
    holds a verb of its own is a clause, not an item.
    """
    gap = t[e:ts]
    if gap == ", ":
        return True  # a parenthetical trigger: "trace right effusion, if any"
    if "," not in gap:
        return _words(gap) <= window + 1
    seps = list(_SEP.finditer(gap))
    last = seps[-1].group(0) if seps else ", "
    if _CLOSING.fullmatch(last) is None and " and " not in last:
        return False  # "mild cardiomegaly, effusion is not seen": a comma alone joins no list
    if _words(gap) > max_words:
        return False
    bounds = [0] + [x for sep in seps for x in sep.span()] + [len(gap)]
    items = [gap[bounds[i] : bounds[i + 1]] for i in range(1, len(bounds) - 1, 2)]
    return all(_words(" " + item + " ") <= window + 1 and not _HAS_COPULA.search(item) for item in items)


def or_coordinated(t: str, a_end: int, b_start: int) -> bool:
    """Whether two mentions are joined by "or" / "and/or" ("atelectasis or pneumonia").

    >>> t = "atelectasis or early pneumonia"
    >>> or_coordinated(t, 11, t.index("pneumonia")), or_coordinated(t, 11, 12)
    (True, False)
    """
    return a_end <= b_start and _OR_GAP.fullmatch(t, a_end, b_start) is not None


# Sizes: "11 mm", "1.2 cm", "15 x 9 mm", "5 to 16 mm", "less than 1 cm"; "short axis" / "long axis".
_SIZE = re.compile(
    r"(?P<less>(?:less than|smaller than|under|below|<) )?"
    r"(?:(?P<a>\d+(?:\.\d+)?) ?(?:mm |cm )?(?P<op>x|\*|to|-) ?)?(?P<b>\d+(?:\.\d+)?) ?(?P<unit>mm|cm)(?![a-z])"
    r"(?P<axis>(?: in| of)? (?:short|long)[- ]axis)?"
)
_SHORT_BEFORE = re.compile(r"short[- ]ax[ie]s(?: diameters?)?(?: of| ranging from| measuring)? ?$")
_SMALL = re.compile(r"(?<![a-z])(?:subcentimet\w*|sub-centimet\w*|millimetric|tiny)(?![a-z])")


def short_axis_mm(t: str, start: int, end: int) -> float | None:
    """The largest short-axis size (mm) stated in ``t[start:end]``, or None.

    A size whose axis is named counts only when it is the short axis; where short-axis sizes are
    named, the others are ignored. "15 x 9 mm" has a short axis of 9 mm; a range counts its upper
    end; "less than 1 cm" counts as just under 10 mm; "subcentimeter" / "millimetric" as 0.

    >>> short_axis_mm("lymph nodes with a short axis of 11 mm in the mediastinum", 0, 58)
    11.0
    >>> short_axis_mm("a node measuring 12 mm in long axis and 7 mm in short axis", 0, 59)
    7.0
    >>> short_axis_mm("a 15 x 9 mm node; nodes from 5 to 16 mm", 0, 17), short_axis_mm("subcentimeter nodes", 0, 19)
    (9.0, 0.0)
    """
    named: list[float] = []
    plain: list[float] = []
    for m in _SIZE.finditer(t, start, end):
        scale = 10.0 if m.group("unit") == "cm" else 1.0
        b = float(m.group("b")) * scale
        if m.group("a") is not None:
            a = float(m.group("a")) * scale
            b = min(a, b) if m.group("op") in ("x", "*") else max(a, b)
        if m.group("less"):
            b -= 0.01
        axis = m.group("axis") or ""
        if "short" in axis or _SHORT_BEFORE.search(t, max(start, m.start() - 40), m.start()):
            named.append(b)
        elif "long" not in axis:
            plain.append(b)
    sizes = named or plain
    if sizes:
        return max(sizes)
    if _SMALL.search(t, start, end):
        return 0.0
    return None


# -- small helpers of RuleTeacher._classify --------------------------------------------------------
def holds(m: tuple[int, int, int, int], s: int, e: int) -> bool:
    return m[0] <= s and e <= m[1] and m[1] - m[0] > e - s


def next_start(starts: list[int], a: int, default: int) -> int:
    """The first of ``starts`` at or after ``a``, or ``default`` when none comes before it."""
    i = bisect_left(starts, a)
    return min(starts[i], default) if i < len(starts) else default


def back_words(t: str, s: int, n: int) -> int:
    """Where the ``n`` words before ``s`` start."""
    i = s
    for _ in range(n):
        j = t.rfind(" ", 0, max(i - 1, 0))
        if j < 0:
            return 0
        i = j + 1
    return i


def next_mention(found: list[tuple[int, int, int, int]], e: int, label: int, default: int) -> int:
    return min((s for s, _e, lab, _k in found if s >= e and lab != label), default=default)


def in_or_list(t: str, s: int, e: int, found: list[tuple[int, int, int, int]], lo: int, hi: int) -> bool:
    for fs, fe, _lab, _k in found:
        if lo <= fs < hi and (or_coordinated(t, e, fs) or or_coordinated(t, fe, s)):
            return True
    return False
