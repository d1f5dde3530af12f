"""Phrase lists as regular expressions, and a dispatcher that runs many lists in one pass.

A phrase list (mention phrases of a label, trigger phrases of a category) is one regex of
alternatives, longest first, matched as whole words (:func:`compile_phrases`). Its matches are
what ``finditer`` gives: leftmost, non-overlapping. That is the reference definition.

The :class:`Dispatcher` gives the same spans for many lists at once, faster: every alternative is
rewritten so that it starts with a literal (leading groups are distributed: ``(is|are) absent`` ->
``is absent``, ``are absent``), indexed by its first characters (up to four), and tried only at the
word starts of the text that begin with them, with ``match`` instead of a scan. Lists
that cannot be rewritten (an alternative starting with ``\\w`` or punctuation) are scanned whole.
Tests pin the dispatcher to the reference (``tests/labeling/test_labeling_fast_path.py``).

>>> d = Dispatcher([["effusions?", "(pleural )?effusions?"], ["(is|are) not seen", "no"]])
>>> d.spans("no pleural effusion. effusions are not seen")
[[(3, 19), (21, 30)], [(0, 2), (31, 43)]]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

_END = r"(?:(?![a-z0-9])|(?<=[^a-z0-9]))"  # a match ends at a word end (or after punctuation)
_WORD_START = re.compile(r"(?<![a-z0-9])[a-z0-9]")
_META = set(".^$*+?{}[]\\|()")
_QUANT = set("?*+{")
_MAX_EXPANSIONS = 256
KEY = 4  # the dispatcher's longest key, in characters (Dispatcher.spans spells out 4..1)
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?;](?= |$)")
# De-identification placeholders: XXXX (Open-i), ___ (MIMIC-CXR), [** ... **] (older MIMIC). Each stands
# for a word, a name or a date, so it is dropped: its own words ("[**Clip Number**]") are not read, it
# does not split a phrase ("right IJ ___ line") and it adds no word to a negation's window.
_BRACKETED = re.compile(r"\[\*\*[^\]\n]*?\*\*\]")
_UNDERSCORES = re.compile(r"_{2,}")
_XXX = re.compile(r"(?<![a-z0-9])x{3,}(?![a-z0-9])")


def sorted_alternatives(phrases: Sequence[str]) -> list[str]:
    """The alternatives of a phrase list in the order the regex tries them: longest text first."""
    return sorted({p.strip() for p in phrases if p and p.strip()}, key=len, reverse=True)


def compile_phrases(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for a phrase list: longest alternatives first, matched as whole words.

    >>> compile_phrases(["no", "no evidence of"]).search("there is no evidence of it").group(0)
    'no evidence of'
    >>> compile_phrases(["no"]).search("nodule") is None
    True
    """
    if not phrases:
        return None
    alts = sorted_alternatives(phrases)
    # Lookarounds instead of \b so that fragments may start or end with punctuation (", with").
    word = [a for a in alts if a[0].isalnum() or a[0] == "("]
    other = [a for a in alts if a not in word]
    parts = []
    if word:
        parts.append(r"(?<![a-z0-9])(?:" + "|".join(f"(?:{a})" for a in word) + ")")
    if other:
        parts.append("(?:" + "|".join(f"(?:{a})" for a in other) + ")")
    return re.compile("(?:" + "|".join(parts) + ")" + _END)


def expand_leading(alt: str) -> list[str] | None:
    """``alt`` as alternatives that each start with a literal, in the order the regex tries them.

    A leading group ``(a|b)rest`` becomes ``a rest``, ``b rest``; an optional one ``(a )?rest`` becomes
    ``a rest``, ``rest`` (greedy: with the group first). None where that is not possible (other
    quantifiers, lookarounds, a leading ``\\w`` or class) or would give too many alternatives.

    >>> expand_leading("((is|are) )?not seen")
    ['is not seen', 'are not seen', 'not seen']
    >>> expand_leading("(lymph)?adenopath(y|ies)"), expand_leading("\\w+ly enlarged")
    (['lymphadenopath(y|ies)', 'adenopath(y|ies)'], None)
    """
    done: list[str] = []
    todo = [alt]
    while todo:
        a = todo.pop(0)
        if not a.startswith("("):
            if not a or a[0] in _META:
                return None
            done.append(a)
            continue
        if a.startswith("(?"):
            return None
        close = _matching_paren(a)
        if close is None:
            return None
        branches = _split_top(a[1:close])
        rest = a[close + 1 :]
        optional = rest.startswith("?")
        if optional:
            rest = rest[1:]
            if rest.startswith(("?", "+")):
                return None  # lazy or possessive
        elif rest[:1] in _QUANT:
            return None
        new = [b + rest for b in branches] + ([rest] if optional else [])
        todo = new + todo  # keep the regex's order of trial
        if len(todo) + len(done) > _MAX_EXPANSIONS:
            return None
    return done


def _structure(pattern: str):
    """``(index, character, depth after it)`` for every character of a regular expression that is neither
    escaped nor inside a character class: the characters that shape groups and alternatives."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            depth += {"(": 1, ")": -1}.get(c, 0)
            yield i, c, depth
        i += 1


def _matching_paren(s: str) -> int | None:
    """Index of the parenthesis that closes the group opening ``s``."""
    return next((i for i, c, depth in _structure(s) if c == ")" and depth == 0), None)


def _split_top(body: str) -> list[str]:
    """``body`` split at its top-level ``|`` (not inside a group or a character class)."""
    cuts = [i for i, c, depth in _structure(body) if c == "|" and depth == 0]
    return [body[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(body)], strict=True)]


def literal_prefix(alt: str) -> str:
    """The literal characters every match of ``alt`` starts with.

    >>> literal_prefix("effusions?"), literal_prefix("no evidence of"), literal_prefix("ptx\\w*")
    ('effusion', 'no evidence of', 'ptx')
    """
    out: list[str] = []
    i = 0
    while i < len(alt):
        c = alt[i]
        if c == "\\":
            nxt = alt[i + 1 : i + 2]
            if not nxt or nxt.isalnum():
                break  # a class such as \\w, \\d, \\b
            lit, step = nxt, 2
        elif c in _META:
            break
        else:
            lit, step = c, 1
        if alt[i + step : i + step + 1] in _QUANT:
            break  # the character is optional or repeated
        out.append(lit)
        i += step
    return "".join(out)


class Dispatcher:
    """Spans of several phrase lists in one pass over the text; see the module docstring.

    ``spans(t)[i]`` equals ``[m.span() for m in compile_phrases(lists[i]).finditer(t)]``.
    """

    def __init__(self, lists: Sequence[Sequence[str]]) -> None:
        self.n = len(lists)
        self.scanned: list[tuple[int, re.Pattern[str]]] = []  # lists run whole
        per_list: list[list[tuple[str, str]]] = []  # (literal prefix, alternative), in trial order
        for i, phrases in enumerate(lists):
            alts: list[tuple[str, str]] = []
            for alt in sorted_alternatives(phrases):
                expanded = expand_leading(alt)
                if expanded is None or any(
                    not (p := literal_prefix(x)) or not p[0].isalnum() for x in expanded
                ):
                    alts = []
                    break
                alts += [(literal_prefix(x), x) for x in expanded]
            if alts:
                per_list.append(alts)
            else:
                per_list.append([])
                rx = compile_phrases(phrases)
                if rx is not None:
                    self.scanned.append((i, rx))
        # key (the first 1..KEY characters of a literal prefix) -> ((list index, regex of the list's
        # alternatives that can match where the text starts with the key), ...). The text at a word
        # start is looked up by its longest key; keys are closed under prefixes, so when a shorter key
        # is the longest one, no alternative with a longer prefix can match there.
        keys = {p[:k] for alts in per_list for p, _ in alts for k in range(1, min(len(p), KEY) + 1)}
        self._table: dict[str, tuple[tuple[int, re.Pattern[str]], ...]] = {}
        for key in keys:
            entry = []
            for i, alts in enumerate(per_list):
                if len(key) == KEY:
                    mine = [x for p, x in alts if p.startswith(key) or key.startswith(p)]
                else:
                    mine = [x for p, x in alts if len(p) <= len(key) and key.startswith(p)]
                if mine:
                    entry.append((i, _compile_alternatives(tuple(mine))))
            self._table[key] = tuple(entry)

    def spans(self, t: str) -> list[list[tuple[int, int]]]:
        """Per list, the spans ``finditer`` of its regex would give on ``t``."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.n)]
        for i, rx in self.scanned:
            out[i] = [m.span() for m in rx.finditer(t)]
        last = [0] * self.n
        get = self._table.get
        for m in _WORD_START.finditer(t):
            p = m.start()
            # The longest key the text at p starts with (KEY = 4 characters, else fewer).
            entry = get(t[p : p + 4])
            if entry is None:
                entry = get(t[p : p + 3])
                if entry is None:
                    entry = get(t[p : p + 2])
                    if entry is None:
                        entry = get(t[p], ())
            for i, rx in entry:
                if p >= last[i]:
                    mm = rx.match(t, p)
                    if mm is not None:
                        out[i].append((p, mm.end()))
                        last[i] = mm.end()
        return out


@functools.lru_cache(maxsize=4096)
def _compile_alternatives(alts: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("(?:" + "|".join(f"(?:{x})" for x in alts) + ")" + _END)


def normalize(text: str, abbreviations: dict[str, str] | None = None) -> tuple[str, list[int]]:
    """Lower-cased text with single spaces, and the offsets where its sentences end.

    De-identification placeholders are dropped first; ``abbreviations`` (lower-case, from
    ``triggers.yml``) are expanded next, so that "pl." does not end a sentence and "w/o" reads as
    "without".

    >>> normalize("No effusion.\\n\\nHeart   size 2.5 cm; stable")
    ('no effusion. . heart size 2.5 cm; stable', [12, 14, 33])
    >>> normalize("No pl. effusion w/o PTX", {"pl.": "pleural", "w/o": "without"})[0]
    'no pleural effusion without ptx'
    >>> normalize("No XXXX, XXXX, or PTX. Right IJ ___ line; [**Clip Number (Radiology) 1**] clear")[0]
    'no, or ptx. right ij line; clear'
    """
    t = text.lower()
    if "__" in t or "xxx" in t or "[**" in t:
        t = _drop_placeholders(t)
    if abbreviations:
        t = _abbreviation_regex(tuple(abbreviations)).sub(lambda m: abbreviations[m.group(0)], t)
    t = _BLANK_LINE.sub(" . ", t)
    t = _SPACES.sub(" ", t).strip()
    return t, [m.end() for m in _SENTENCE_END.finditer(t)]


def _drop_placeholders(t: str) -> str:
    """``t`` without placeholders; the list items they leave empty go too ("no XXXX, XXXX, or")."""
    for token, rx in (("[**", _BRACKETED), ("__", _UNDERSCORES), ("xxx", _XXX)):
        if token in t:
            t = rx.sub(" ", t)
    while " ," in t:  # str.replace: far cheaper than a regex over every report with a placeholder
        t = t.replace(" ,", ",")
    while ",," in t:
        t = t.replace(",,", ",")
    return t


@functools.lru_cache(maxsize=8)
def _abbreviation_regex(keys: tuple[str, ...]) -> re.Pattern[str]:
    alts = sorted(keys, key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![a-z0-9])")
