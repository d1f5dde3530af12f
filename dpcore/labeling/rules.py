"""A CheXpert-style rule teacher: mention phrases, unmentions, NegEx/ConText triggers, aggregation.

The vocabulary lives in data files beside this module (``rules/triggers.yml`` and one file per
label set); this module only compiles and applies them. Per report:

1. lower-case, split sentences (``. ! ? ;`` before a space, blank lines), collapse whitespace;
2. find mentions per label (``mention`` and ``neutral`` phrases), drop ``unmention`` overlaps and
   mentions lying inside a longer mention of another label;
3. find triggers (longest match wins where they overlap) and, for each mention, consult the nearest
   pre-trigger and post-trigger in its sentence (bounded by word windows and termination phrases):
   uncertain beats negated beats positive;
4. aggregate per label within the report: positive over uncertain over negative; "No Finding" is 1
   only when no label other than Support Devices is positive or uncertain.

>>> t = RuleTeacher()
>>> v = t.label_texts(["Mild cardiomegaly. No pleural effusion. Possible left basilar atelectasis."])[0]
>>> {t.label_set.labels[i]: x for i, x in enumerate(v) if x is not None}
{'Cardiomegaly': 1, 'Atelectasis': -1, 'Pleural Effusion': 0}
>>> t.label_texts(["Heart size normal. Lungs are clear."])[0][0]  # No Finding
1
"""

from __future__ import annotations

import functools
import hashlib
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

try:  # the regex parser moved in Python 3.11
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

import yaml

from dpcore.labeling.base import LabelVector, aggregate_no_finding
from dpcore.labels import LabelSet, get_label_set

RULES_PACKAGE = "dpcore.labeling"
TRIGGERS_FILE = "triggers.yml"

# Trigger categories; the pre/post split decides on which side of a mention they act.
NEG, UNC, PSEUDO, TERM, IGNORE, AFFIRM = "neg", "unc", "pseudo", "term", "ignore", "affirm"
_PRE_CATEGORIES = {
    "pre_negation": NEG,
    "pre_negation_short": NEG,
    "pre_uncertainty": UNC,
    "pseudo": PSEUDO,
    "pre_ignore": IGNORE,
}
_POST_CATEGORIES = {"post_negation": NEG, "post_uncertainty": UNC, "post_affirm": AFFIRM}

_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?;](?= |$)")


_REGULAR, _NEUTRAL, _NEGATIVE = 0, 1, 2  # kinds of mention phrase


def _read_rules_file(name: str) -> tuple[dict[str, Any], bytes]:
    raw = resources.files(RULES_PACKAGE).joinpath("rules", name).read_bytes()
    return yaml.safe_load(raw) or {}, raw


def compile_phrases(phrases: Sequence[str], *, dispatch: bool = False) -> re.Pattern[str] | None:
    """One regex for a phrase list: longest alternatives first, matched as whole words.

    ``dispatch`` builds an equivalent, faster regex (see :func:`_guard_first_char`).

    >>> compile_phrases(["no", "no evidence of"]).search("there is no evidence of it").group(0)
    'no evidence of'
    >>> compile_phrases(["no"]).search("nodule") is None
    True
    >>> compile_phrases(["(no|without) change", "no"], dispatch=True).pattern
    '(?:(?<![a-z0-9])(?:(?:(?=[nw])(?:(no|without) change))|(?:no)))(?:(?![a-z0-9])|(?<=[^a-z0-9]))'
    """
    if not phrases:
        return None
    alts = sorted({p.strip() for p in phrases if p and p.strip()}, key=len, reverse=True)
    # Lookarounds instead of \b so that fragments may start or end with punctuation (", with");
    # the plain lookbehind is twice as fast as a disjunction, so fragments are split by first char.
    word = [a for a in alts if a[0].isalnum() or a[0] == "("]
    other = [a for a in alts if a not in word]
    parts = []
    if word:
        guarded = [_guard_first_char(a) for a in word] if dispatch else word
        parts.append(r"(?<![a-z0-9])(?:" + "|".join(f"(?:{a})" for a in guarded) + ")")
    if other:
        parts.append("(?:" + "|".join(f"(?:{a})" for a in other) + ")")
    return re.compile("(?:" + "|".join(parts) + r")(?:(?![a-z0-9])|(?<=[^a-z0-9]))")


def _guard_first_char(alt: str) -> str:
    """``alt`` behind a lookahead for the characters it can start with, when it opens with a group.

    An alternative that opens with a literal is rejected by the regex engine after one character
    comparison; one that opens with a group ("(is|are) ...") is entered at every word start. The
    lookahead cannot change what it matches, only skip it sooner.

    >>> _guard_first_char("(is|are) large"), _guard_first_char("mass"), _guard_first_char("\\\\w+ly")
    ('(?=[ai])(?:(is|are) large)', 'mass', '\\\\w+ly')
    """
    if not alt.startswith("("):
        return alt
    chars = _first_chars(alt)
    if chars is None:
        return alt
    return "(?=[" + "".join(_escape_in_set(c) for c in sorted(chars)) + "])(?:" + alt + ")"


def _escape_in_set(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _first_chars(phrase: str) -> set[str] | None:
    """The characters a match of ``phrase`` can start with; None where unknown (or it may be empty).

    >>> sorted(_first_chars("((is|are) )?difficult")), _first_chars("\\\\w+ly")
    (['a', 'd', 'i'], None)
    """
    tree = _sre_parse.parse(phrase)
    if tree.state.flags & _sre.SRE_FLAG_IGNORECASE:
        return None
    chars, nullable = _seq_first_chars(list(tree))
    return None if chars is None or nullable or not chars else chars


def _seq_first_chars(items: list[Any]) -> tuple[set[str] | None, bool]:
    """(first characters or None for unknown, whether the sequence can match the empty string)."""
    out: set[str] = set()
    for op, av in items:
        if op is _sre.LITERAL:
            return out | {chr(av)}, False
        if op is _sre.IN:
            chars = _set_chars(av)
            return (None if chars is None else out | chars), False
        if op is _sre.SUBPATTERN and not av[1] & _sre.SRE_FLAG_IGNORECASE:
            chars, nullable = _seq_first_chars(list(av[3]))
        elif op is _sre.BRANCH:
            firsts = [_seq_first_chars(list(b)) for b in av[1]]
            if any(f is None for f, _ in firsts):
                return None, False
            chars = set().union(*(f for f, _ in firsts))  # type: ignore[arg-type]
            nullable = any(n for _, n in firsts)
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            chars, nullable = _seq_first_chars(list(av[2]))
            nullable = nullable or av[0] == 0
        else:  # assertions, categories, backreferences ...: do not guess
            return None, False
        if chars is None:
            return None, False
        out |= chars
        if not nullable:
            return out, False
    return out, True


def _set_chars(items: list[Any]) -> set[str] | None:
    """The characters of a ``[...]`` set made of literals and small ranges; None otherwise."""
    chars: set[str] = set()
    for op, av in items:
        if op is _sre.LITERAL:
            chars.add(chr(av))
        elif op is _sre.RANGE and av[1] - av[0] <= 256:
            chars.update(map(chr, range(av[0], av[1] + 1)))
        else:  # negated sets, categories
            return None
    return chars


def required_literals(phrases: Sequence[str]) -> tuple[str, ...] | None:
    """Strings of which every match of ``compile_phrases(phrases)`` contains at least one.

    A pattern whose text contains none of them cannot match, so it need not be run (``str in`` is
    far cheaper than a regex scan). None: some phrase has no required literal, always run it.

    >>> required_literals(["mass(es)?", "nodules?", "(is|are) not (enlarged|widened)"])
    ('enlarged', 'mass', 'nodule', 'widened')
    >>> required_literals(["\\\\w+ly"]), required_literals(["(a|\\\\w)b?"])
    (('ly',), None)
    """
    found: set[str] = set()
    for p in phrases:
        if not p or not p.strip():
            continue
        tree = _sre_parse.parse(p.strip())
        lits = None if tree.state.flags & _sre.SRE_FLAG_IGNORECASE else _seq_literals(tree)
        if not lits:
            return None
        found |= lits
    # A string containing another required string adds nothing to the test.
    return tuple(sorted(a for a in found if not any(b != a and b in a for b in found)))


def _seq_literals(items: Any) -> frozenset[str] | None:
    """Best literal set for a parsed regex sequence: its longest shortest member, then fewest."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []
    for op, av in items:
        if op is _sre.LITERAL:
            run.append(chr(av))
            continue
        if run:  # a run of literal characters is required as a whole
            candidates.append(frozenset(["".join(run)]))
            run = []
        sub = _node_literals(op, av)
        if sub:
            candidates.append(sub)
    if run:
        candidates.append(frozenset(["".join(run)]))
    if not candidates:
        return None
    return max(candidates, key=lambda c: (min(map(len, c)), -len(c)))


def _node_literals(op: Any, av: Any) -> frozenset[str] | None:
    """Required literals of one non-literal regex node; None where it requires none we can see."""
    if op is _sre.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        return None if add_flags & _sre.SRE_FLAG_IGNORECASE else _seq_literals(sub)
    if op is _sre.BRANCH:  # every branch must contribute
        parts = [_seq_literals(b) for b in av[1]]
        return None if any(not x for x in parts) else frozenset().union(*parts)  # type: ignore[arg-type]
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)):
        low, _high, sub = av
        return _seq_literals(sub) if low >= 1 else None
    if op is getattr(_sre, "ATOMIC_GROUP", None):
        return _seq_literals(av)
    return None  # sets, categories, assertions, backreferences: nothing literal to require


@dataclass(frozen=True)
class _Phrases:
    """A compiled phrase list and the literals that gate it (see :func:`required_literals`)."""

    rx: re.Pattern[str]  # the reference regex
    fast: re.Pattern[str]  # the same matches, dispatched on the first character
    literals: tuple[str, ...] | None

    @classmethod
    def compile(cls, phrases: Sequence[str]) -> _Phrases | None:
        rx = compile_phrases(phrases)
        if rx is None:
            return None
        fast = compile_phrases(phrases, dispatch=True)
        assert fast is not None
        return cls(rx, fast, required_literals(phrases))

    def spans(self, t: str, fast: bool = True) -> list[tuple[int, int]]:
        """Spans of ``rx.finditer(t)``; ``fast``: gated by the literals, with the dispatched regex."""
        if not fast:
            return [m.span() for m in self.rx.finditer(t)]
        lits = self.literals
        if lits is not None and not any(map(t.__contains__, lits)):
            return []
        return [m.span() for m in self.fast.finditer(t)]


@dataclass(frozen=True)
class _LabelRules:
    index: int
    mention: _Phrases | None
    neutral: _Phrases | None
    unmention: _Phrases | None
    negative: _Phrases | None


def normalize(text: str, abbreviations: dict[str, str] | None = None) -> tuple[str, list[int]]:
    """Lower-cased text with single spaces, and the offsets where its sentences end.

    ``abbreviations`` (lower-case, from ``triggers.yml``) are expanded first, so that "pl." does not
    end a sentence and "w/o" reads as "without".

    >>> normalize("No effusion.\\n\\nHeart   size 2.5 cm; stable")
    ('no effusion. . heart size 2.5 cm; stable', [12, 14, 33])
    >>> normalize("No pl. effusion w/o PTX", {"pl.": "pleural", "w/o": "without"})[0]
    'no pleural effusion without ptx'
    """
    t = text.lower()
    if abbreviations:
        t = _abbreviation_regex(tuple(abbreviations)).sub(lambda m: abbreviations[m.group(0)], t)
    t = _BLANK_LINE.sub(" . ", t)
    t = _SPACES.sub(" ", t).strip()
    return t, [m.end() for m in _SENTENCE_END.finditer(t)]


@functools.lru_cache(maxsize=8)
def _abbreviation_regex(keys: tuple[str, ...]) -> re.Pattern[str]:
    alts = sorted(keys, key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![a-z0-9])")


class RuleTeacher:
    """The default, offline teacher: rules from ``dpcore/labeling/rules/*.yml``.

    ``version`` is a hash of the rule files, so editing a phrase invalidates cached labels.

    >>> t = RuleTeacher(label_set="ctrate")
    >>> t.name, len(t.label_set), len(t.version)
    ('rules-ctrate', 18, 12)
    """

    def __init__(self, *, label_set: str = "chexpert") -> None:
        self.label_set: LabelSet = get_label_set(label_set)
        self.name = f"rules-{self.label_set.name}"
        triggers, raw_t = _read_rules_file(TRIGGERS_FILE)
        rules, raw_r = _read_rules_file(f"{self.label_set.name}.yml")
        self.version = hashlib.sha256(raw_t + b"\0" + raw_r).hexdigest()[:12]
        self.max_pre_words = int(triggers.get("max_pre_words", 12))
        self.max_post_words = int(triggers.get("max_post_words", 6))
        self.max_short_words = int(triggers.get("max_short_words", 3))
        self.abbreviations = {
            str(k).lower(): str(v) for k, v in (triggers.get("abbreviations") or {}).items()
        }
        # (category, polarity, regex); polarity is NEG/UNC/PSEUDO/TERM.
        self._triggers: list[tuple[str, str, _Phrases]] = []
        for key, pol in [*_PRE_CATEGORIES.items(), *_POST_CATEGORIES.items(), ("termination", TERM)]:
            phrases = _Phrases.compile(triggers.get(key) or [])
            if phrases is not None:
                self._triggers.append((key, pol, phrases))
        spec = rules.get("labels") or {}
        unknown = set(spec) - set(self.label_set.labels)
        if unknown:
            raise ValueError(f"rules for {self.label_set.name} name unknown labels: {sorted(unknown)}")
        self._labels: list[_LabelRules] = []
        for i, label in enumerate(self.label_set.labels):
            entry = spec.get(label) or {}
            self._labels.append(
                _LabelRules(
                    i,
                    _Phrases.compile(entry.get("mention") or []),
                    _Phrases.compile(entry.get("neutral") or []),
                    _Phrases.compile(entry.get("unmention") or []),
                    _Phrases.compile(entry.get("negative") or []),
                )
            )
        # The reference path's quick reject: a report without any mention phrase has no labels.
        all_phrases = [
            p for e in spec.values() for k in ("mention", "neutral") for p in ((e or {}).get(k) or [])
        ]
        self._any_mention = compile_phrases(all_phrases)

    def __repr__(self) -> str:
        return f"RuleTeacher(label_set={self.label_set.name!r}, version={self.version!r})"

    # -- public API -------------------------------------------------------------------------------
    def label_texts(self, texts: Sequence[str]) -> list[LabelVector | None]:
        """One label vector per text; the rule teacher never abstains."""
        return [self.label_text(t) for t in texts]

    def label_text(self, text: str) -> LabelVector:
        """The label vector of one report (see the module docstring for the algorithm)."""
        return self._aggregate(self.mentions(text or ""))

    def _label_reference(self, text: str) -> LabelVector:
        """:meth:`label_text` by the slow reference path (:meth:`_mentions_reference`)."""
        return self._aggregate(self._mentions_reference(text or ""))

    def _aggregate(self, mentions: list[tuple[int, int, int, int]]) -> LabelVector:
        out: LabelVector = [None] * len(self.label_set)
        for label, value, _s, _e in mentions:
            cur = out[label]
            # Positive over uncertain over negative.
            if cur is None or value == 1 or (value == -1 and cur == 0):
                out[label] = value
        return aggregate_no_finding(out, self.label_set)

    def explain(self, text: str) -> list[tuple[str, str, int]]:
        """(label, mention text, value) for each classified mention, to see why a label was set.

        >>> RuleTeacher().explain("No pneumothorax.")
        [('Pneumothorax', 'pneumothorax', 0)]
        """
        t, _ = normalize(text, self.abbreviations)
        return [(self.label_set.labels[i], t[s:e], v) for i, v, s, e in self.mentions(text)]

    # -- engine -----------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[tuple[int, int, int, int]]:
        """Classified mentions of ``text`` as (label index, value, start, end) in normalized text."""
        return self._mentions(text, fast=True)

    def _mentions_reference(self, text: str) -> list[tuple[int, int, int, int]]:
        """:meth:`mentions` running every regex on the whole text: the slow, obvious definition.

        Tests pin the gated path to it (``tests/labeling/test_labeling_fast_path.py``).
        """
        return self._mentions(text, fast=False)

    def _mentions(self, text: str, *, fast: bool) -> list[tuple[int, int, int, int]]:
        t, bounds = normalize(text or "", self.abbreviations)
        if not t or self._any_mention is None:
            return []
        if not fast and self._any_mention.search(t) is None:
            return []
        found, any_mention = self._find_mentions(t, fast)
        # Gated, the per-label scans replace the combined quick reject: both ask whether any
        # mention or neutral phrase matches anywhere (negative phrases alone label nothing).
        if not found or not any_mention:
            return []
        pre, post, term = self._find_triggers(t, fast)
        term_starts = [s for s, _ in term]
        out = []
        for s, e, label, kind in found:
            if kind == _NEGATIVE:
                out.append((label, 0, s, e))
                continue
            value, affirmed = self._classify(t, bounds, s, e, pre, post, term_starts)
            if value is None or (kind == _NEUTRAL and value == 1 and not affirmed):
                continue  # "heart size" alone says nothing about cardiomegaly
            out.append((label, value, s, e))
        return out

    def _find_mentions(self, t: str, fast: bool) -> tuple[list[tuple[int, int, int, int]], bool]:
        """Mention spans (start, end, label, kind) and whether any mention/neutral phrase matched."""
        found: list[tuple[int, int, int, int]] = []
        any_mention = False
        for lr in self._labels:
            spans: list[tuple[int, int, int, int]] = []
            if lr.negative is not None:
                spans += [(s, e, lr.index, _NEGATIVE) for s, e in lr.negative.spans(t, fast)]
            for phrases, kind in ((lr.mention, _REGULAR), (lr.neutral, _NEUTRAL)):
                if phrases is None:
                    continue
                hits = phrases.spans(t, fast)
                if not hits:
                    continue
                any_mention = True
                taken = [(s, e) for s, e, _, _ in spans]
                for s, e in hits:
                    # Same-label overlaps: negative phrases, then mentions, then neutral ones win.
                    if not any(s < te and ts < e for ts, te in taken):
                        spans.append((s, e, lr.index, kind))
            if spans and lr.unmention is not None:
                un = lr.unmention.spans(t, fast)
                if un:
                    spans = [x for x in spans if not any(x[0] < ue and us < x[1] for us, ue in un)]
            found += spans
        if len(found) > 1:
            # A mention strictly inside a longer mention of another label is that label's wording.
            found = [
                a
                for a in found
                if not any(
                    b[2] != a[2] and b[0] <= a[0] and a[1] <= b[1] and (b[1] - b[0]) > (a[1] - a[0])
                    for b in found
                )
            ]
        return found, any_mention

    def _find_triggers(
        self, t: str, fast: bool
    ) -> tuple[list[tuple[int, int, str, int]], list[tuple[int, int, str]], list[tuple[int, int]]]:
        hits: list[tuple[int, int, str, str]] = []
        for key, pol, phrases in self._triggers:
            hits += [(s, e, key, pol) for s, e in phrases.spans(t, fast)]
        # Longest match wins among overlapping triggers ("cannot be excluded" over "not").
        hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
        pre: list[tuple[int, int, str, int]] = []
        post: list[tuple[int, int, str]] = []
        term: list[tuple[int, int]] = []
        last = (-1, -1)
        for s, e, key, pol in hits:
            # The same words may act both ways ("normal heart", "heart size normal").
            if s < last[1] and (s, e) != last:
                continue
            last = (s, e)
            if pol == TERM:
                term.append((s, e))
            elif key in _PRE_CATEGORIES:
                window = self.max_short_words if key == "pre_negation_short" else self.max_pre_words
                pre.append((s, e, pol, window))
            else:
                post.append((s, e, pol))
        return pre, post, term

    def _classify(
        self,
        t: str,
        bounds: list[int],
        s: int,
        e: int,
        pre: list[tuple[int, int, str, int]],
        post: list[tuple[int, int, str]],
        term_starts: list[int],
    ) -> tuple[int | None, bool]:
        """(value, affirmed) of one mention; value None = drop it (e.g. "correlation for infection")."""
        sent = bisect_right(bounds, s)
        sent_start = bounds[sent - 1] if sent > 0 else 0
        sent_end = bounds[sent] if sent < len(bounds) else len(t)
        polarities: list[str] = []
        # Nearest pre-trigger that starts before the mention, in its sentence, within its window.
        for ts, te, pol, window in reversed(pre):
            if ts >= s:
                continue
            if ts < sent_start:
                break
            gap_start = min(te, s)
            if t.count(" ", gap_start, s) > window or _has_term(term_starts, gap_start, s):
                break
            polarities.append(pol)
            break
        for ts, _te, pol in post:
            if ts < e:
                continue
            if ts >= sent_end:
                break
            if t.count(" ", e, ts) > self.max_post_words or _has_term(term_starts, e, ts):
                break
            polarities.append(pol)
            break
        if IGNORE in polarities:
            return None, False
        if UNC in polarities:
            return -1, True
        if NEG in polarities:
            return 0, True
        return 1, AFFIRM in polarities


def _has_term(term_starts: list[int], a: int, b: int) -> bool:
    """Whether a termination phrase starts in [a, b)."""
    i = bisect_right(term_starts, a - 1)
    return i < len(term_starts) and term_starts[i] < b
