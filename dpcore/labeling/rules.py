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


def compile_phrases(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for a phrase list: longest alternatives first, matched as whole words.

    >>> compile_phrases(["no", "no evidence of"]).search("there is no evidence of it").group(0)
    'no evidence of'
    >>> compile_phrases(["no"]).search("nodule") is None
    True
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
        parts.append(r"(?<![a-z0-9])(?:" + "|".join(f"(?:{a})" for a in word) + ")")
    if other:
        parts.append("(?:" + "|".join(f"(?:{a})" for a in other) + ")")
    return re.compile("(?:" + "|".join(parts) + r")(?:(?![a-z0-9])|(?<=[^a-z0-9]))")


@dataclass(frozen=True)
class _LabelRules:
    index: int
    mention: re.Pattern[str] | None
    neutral: re.Pattern[str] | None
    unmention: re.Pattern[str] | None
    negative: re.Pattern[str] | None


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
        self._triggers: list[tuple[str, str, re.Pattern[str]]] = []
        for key, pol in [*_PRE_CATEGORIES.items(), *_POST_CATEGORIES.items(), ("termination", TERM)]:
            rx = compile_phrases(triggers.get(key) or [])
            if rx is not None:
                self._triggers.append((key, pol, rx))
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
                    compile_phrases(entry.get("mention") or []),
                    compile_phrases(entry.get("neutral") or []),
                    compile_phrases(entry.get("unmention") or []),
                    compile_phrases(entry.get("negative") or []),
                )
            )
        # Quick reject: a report without any mention phrase needs no trigger scan.
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
        out: LabelVector = [None] * len(self.label_set)
        for label, value, _s, _e in self.mentions(text or ""):
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
        t, bounds = normalize(text, self.abbreviations)
        if not t or self._any_mention is None or self._any_mention.search(t) is None:
            return []
        found = self._find_mentions(t)
        if not found:
            return []
        pre, post, term = self._find_triggers(t)
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

    def _find_mentions(self, t: str) -> list[tuple[int, int, int, int]]:
        found: list[tuple[int, int, int, int]] = []
        for lr in self._labels:
            spans: list[tuple[int, int, int, int]] = []
            if lr.negative is not None:
                spans += [(m.start(), m.end(), lr.index, _NEGATIVE) for m in lr.negative.finditer(t)]
            for rx, kind in ((lr.mention, _REGULAR), (lr.neutral, _NEUTRAL)):
                if rx is None:
                    continue
                taken = [(s, e) for s, e, _, _ in spans]
                for m in rx.finditer(t):
                    s, e = m.span()
                    # Same-label overlaps: negative phrases, then mentions, then neutral ones win.
                    if not any(s < te and ts < e for ts, te in taken):
                        spans.append((s, e, lr.index, kind))
            if spans and lr.unmention is not None:
                un = [m.span() for m in lr.unmention.finditer(t)]
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
        return found

    def _find_triggers(
        self, t: str
    ) -> tuple[list[tuple[int, int, str, int]], list[tuple[int, int, str]], list[tuple[int, int]]]:
        hits: list[tuple[int, int, str, str]] = []
        for key, pol, rx in self._triggers:
            hits += [(m.start(), m.end(), key, pol) for m in rx.finditer(t)]
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
