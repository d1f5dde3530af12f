"""A CheXpert-style rule teacher: mention phrases, unmentions, NegBio-style scope, aggregation.

The vocabulary lives in data files beside this module (``rules/triggers.yml`` and one file per
label set); this module compiles and applies them, :mod:`dpcore.labeling.scope` reads list and
clause structure. Per report:

1. lower-case, drop de-identification placeholders (XXXX, ___, [** ... **]), split sentences
   (``. ! ? ;`` before a space, blank lines), collapse whitespace;
2. find mentions per label (``mention``, ``uncertain``, ``neutral`` and ``negative`` phrases), drop
   ``unmention`` overlaps and mentions lying inside a longer mention of another label;
3. find triggers (longest match wins where they overlap); for each mention, the nearest pre- and
   post-trigger whose scope covers it (a coordinated list, up to a terminator or a new clause);
   precedence as in CheXpert: uncertainty-first > negation > uncertainty > positive; then the
   report's context (:mod:`dpcore.labeling.context`): a ``benign`` explanation ("is a nipple
   shadow") drops the mention or makes it uncertain, and ``uncertain`` (soft) signs yield to an
   explicit negation of their label ("congestion without frank edema");
4. aggregate per label within the report: positive over uncertain over negative. "No Finding"
   comes last, as CheXpert defines it: 1 when no other label but Support Devices is positive or
   uncertain and no other finding from CheXpert's list (``No Finding: mention`` in chexpert.yml:
   emphysema, granuloma, scoliosis, ...) is; blank otherwise (never 0).

>>> t = RuleTeacher()
>>> v = t.label_texts(["Mild cardiomegaly. No pleural effusion. Possible left basilar atelectasis."])[0]
>>> {t.label_set.labels[i]: x for i, x in enumerate(v) if x is not None}
{'Cardiomegaly': 1, 'Atelectasis': -1, 'Pleural Effusion': 0}
>>> t.label_texts(["Heart size normal. Lungs are clear."])[0][0]  # No Finding
1
>>> t.no_finding_drivers("Lungs are clear. Degenerative changes of the spine.")
['other finding: degenerative']
"""

from __future__ import annotations

import functools
import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import yaml

from dpcore.labeling.base import LabelVector
from dpcore.labeling.context import explained_value, yield_soft_signs
from dpcore.labeling.phrases import Dispatcher, compile_phrases, normalize
from dpcore.labeling.scope import (
    back_words,
    backward_in_scope,
    forward_in_scope,
    holds,
    in_or_list,
    next_mention,
    next_start,
    short_axis_mm,
)
from dpcore.labels import LabelSet, get_label_set

RULES_PACKAGE = "dpcore.labeling"
TRIGGERS_FILE = "triggers.yml"

# Polarities of triggers, in CheXpert's order of precedence for one mention.
UNC1, NEG, UNC, PSEUDO, IGNORE, AFFIRM, TERM = "unc-first", "neg", "unc", "pseudo", "ignore", "affirm", "term"
# category -> (side, polarity, which mentions it applies to)
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "pre_negation": ("pre", NEG, "all"),
    "pre_negation_short": ("pre", NEG, "all"),
    "pre_uncertainty_first": ("pre", UNC1, "all"),
    "pre_uncertainty": ("pre", UNC, "all"),
    "pre_neutral_uncertainty": ("pre", UNC, "neutral"),
    "pseudo": ("pre", PSEUDO, "all"),
    "pre_ignore": ("pre", IGNORE, "all"),
    "post_negation": ("post", NEG, "all"),
    "post_negation_neutral": ("post", NEG, "neutral"),
    "post_uncertainty_first": ("post", UNC1, "all"),
    "post_uncertainty": ("post", UNC, "all"),
    "post_neutral_uncertainty": ("post", UNC, "neutral"),
    "post_pseudo": ("post", PSEUDO, "finding"),
    "post_affirm": ("post", AFFIRM, "all"),
    "termination": ("", TERM, "all"),
    "connectors": ("", "none", "all"),
}
# Kinds of mention phrase; a label's kinds win same-label overlaps in this order.
NEGATIVE, REGULAR, SOFT, NEUTRAL = 0, 1, 2, 3
_KIND_KEYS = (("negative", NEGATIVE), ("mention", REGULAR), ("uncertain", SOFT), ("neutral", NEUTRAL))

Mention = tuple[int, int, int, int]  # (label index, value, start, end) in normalized text


def _read_rules_file(name: str) -> tuple[dict[str, Any], bytes]:
    raw = resources.files(RULES_PACKAGE).joinpath("rules", name).read_bytes()
    return yaml.safe_load(raw) or {}, raw


@functools.lru_cache(maxsize=8)
def _dispatcher(lists: tuple[tuple[str, ...], ...]) -> Dispatcher:
    return Dispatcher(lists)  # shared by teachers with the same rule files


# A trigger match: (start, end, polarity, which mentions it applies to, window in words).
_Trigger = tuple[int, int, str, str, int]


class RuleTeacher:
    """The default, offline teacher: rules from ``dpcore/labeling/rules/*.yml``.

    ``version`` is a hash of the rule files and of ``no_finding``, so editing a phrase invalidates
    cached labels. ``no_finding="chexpert"`` (default) lets CheXpert's other findings block No
    Finding; ``"labels"`` looks at the label set's own labels only (the synthetic corpus's rule).

    >>> t = RuleTeacher(label_set="ctrate")
    >>> t.name, len(t.label_set), len(t.version)
    ('rules-ctrate', 18, 12)
    """

    def __init__(
        self, *, label_set: str = "chexpert", no_finding: Literal["chexpert", "labels"] = "chexpert"
    ) -> None:
        if no_finding not in ("chexpert", "labels"):
            raise ValueError(f"no_finding must be 'chexpert' or 'labels', not {no_finding!r}")
        self.label_set: LabelSet = get_label_set(label_set)
        self.no_finding = no_finding
        self.name = f"rules-{self.label_set.name}" + ("" if no_finding == "chexpert" else "-nf-labels")
        triggers, raw_t = _read_rules_file(TRIGGERS_FILE)
        rules, raw_r = _read_rules_file(f"{self.label_set.name}.yml")
        self.version = hashlib.sha256(raw_t + b"\0" + raw_r + no_finding.encode()).hexdigest()[:12]
        self.max_pre_words = int(triggers.get("max_pre_words", 12))
        self.max_post_words = int(triggers.get("max_post_words", 6))
        self.max_short_words = int(triggers.get("max_short_words", 3))
        self.max_list_words = int(triggers.get("max_list_words", 30))
        abbreviations = triggers.get("abbreviations") or {}
        self.abbreviations = {str(k).lower(): str(v) for k, v in abbreviations.items()}
        spec = rules.get("labels") or {}
        unknown = set(spec) - set(self.label_set.labels)
        if unknown:
            raise ValueError(f"rules for {self.label_set.name} name unknown labels: {sorted(unknown)}")
        # Every phrase list, mentions then triggers, runs in one pass (Dispatcher) or one by one.
        lists: list[list[str]] = []
        self._mention_lists: list[tuple[int, int, int]] = []  # (list index, label index, kind)
        self._unmention_lists: dict[int, int] = {}  # label index -> list index
        self._benign_lists: dict[int, int] = {}  # label index -> list index (see context.py)
        self._size_rules: dict[int, float] = {}  # label index -> minimum short axis (mm)
        for i, label in enumerate(self.label_set.labels):
            entry = spec.get(label) or {}
            for key, kind in _KIND_KEYS:
                if entry.get(key):
                    self._mention_lists.append((len(lists), i, kind))
                    lists.append([str(p) for p in entry[key]])
            for key, where in (("unmention", self._unmention_lists), ("benign", self._benign_lists)):
                if entry.get(key):
                    where[i] = len(lists)
                    lists.append([str(p) for p in entry[key]])
            if entry.get("size_rule"):
                self._size_rules[i] = float(entry["size_rule"]["min_short_axis_mm"])
        # (list index, side, polarity, which mentions it applies to, window)
        self._trigger_lists: list[tuple[int, str, str, str, int]] = []
        for key, (side, pol, applies) in CATEGORIES.items():
            if triggers.get(key):
                window = self.max_short_words if key == "pre_negation_short" else self.max_pre_words
                self._trigger_lists.append((len(lists), side, pol, applies, window))
                lists.append([str(p) for p in triggers[key]])
        self._regexes = [compile_phrases(x) for x in lists]
        self._dispatcher = _dispatcher(tuple(tuple(x) for x in lists))
        labels = self.label_set.labels
        self._nf = labels.index("No Finding") if "No Finding" in labels else None
        self._sd = labels.index("Support Devices") if "Support Devices" in labels else None

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

    def explain(self, text: str) -> list[tuple[str, str, int]]:
        """(label, mention text, value) for each classified mention, to see why a label was set.

        Mentions of CheXpert's other findings are listed under "No Finding".

        >>> RuleTeacher().explain("No pneumothorax or effusion.")
        [('Pneumothorax', 'pneumothorax', 0), ('Pleural Effusion', 'effusion', 0)]
        """
        t, _ = normalize(text, self.abbreviations)
        return [(self.label_set.labels[i], t[s:e], v) for i, v, s, e in self.mentions(text)]

    def no_finding_drivers(self, text: str) -> list[str]:
        """Why No Finding is blank for ``text``: the labels and other findings that are 1 or -1.

        Empty where No Finding is 1 (and for label sets without No Finding).
        """
        if self._nf is None:
            return []
        t, _ = normalize(text, self.abbreviations)
        mentions = self.mentions(text)
        vector = self._aggregate(mentions)
        drivers = [
            lab
            for i, lab in enumerate(self.label_set.labels)
            if i not in (self._nf, self._sd) and vector[i] in (1, -1)
        ]
        if self.no_finding == "chexpert":
            others = dict.fromkeys(
                f"other finding: {t[s:e]}" for i, v, s, e in mentions if i == self._nf and v in (1, -1)
            )
            drivers += list(others)
        return drivers

    # -- aggregation ------------------------------------------------------------------------------
    def _aggregate(self, mentions: list[Mention]) -> LabelVector:
        out: LabelVector = [None] * len(self.label_set)
        other = False
        for label, value, _s, _e in mentions:
            if label == self._nf:
                other = other or value in (1, -1)
                continue
            cur = out[label]
            # Positive over uncertain over negative (CheXpert's aggregation).
            if cur is None or value == 1 or (value == -1 and cur == 0):
                out[label] = value
        if self._nf is not None:
            blocked = any(v in (1, -1) for i, v in enumerate(out) if i not in (self._nf, self._sd))
            out[self._nf] = None if blocked or (other and self.no_finding == "chexpert") else 1
        return out

    # -- engine -----------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[Mention]:
        """Classified mentions of ``text`` as (label index, value, start, end) in normalized text."""
        return self._mentions(text, fast=True)

    def _mentions_reference(self, text: str) -> list[Mention]:
        """:meth:`mentions` by every phrase regex over the whole text (tests pin the fast path to it)."""
        return self._mentions(text, fast=False)

    def _mentions(self, text: str, *, fast: bool) -> list[Mention]:
        t, bounds = normalize(text or "", self.abbreviations)
        if not t:
            return []
        if fast:
            spans = self._dispatcher.spans(t)
        else:
            spans = [[m.span() for m in rx.finditer(t)] if rx is not None else [] for rx in self._regexes]
        found = self._find_mentions(spans)
        if not found:
            return []
        pre, post, term = self._find_triggers(spans)
        out: list[Mention] = []
        soft: list[bool] = []
        for s, e, label, kind in found:
            value = self._classify(t, bounds, s, e, label, kind, pre, post, term, found)
            if value in (1, -1) and label in self._benign_lists:
                end = next_start(bounds, s + 1, len(t))  # the mention's sentence end
                value = explained_value(t, e, spans[self._benign_lists[label]], end, value)
            if value is not None:
                out.append((label, value, s, e))
                soft.append(kind == SOFT)
        return yield_soft_signs(out, soft, self._nf) if any(soft) else out  # "congestion, no edema"

    def _find_mentions(self, spans: list[list[tuple[int, int]]]) -> list[tuple[int, int, int, int]]:
        """Mention spans (start, end, label, kind), after unmentions and cross-label containment."""
        per_label: dict[int, list[tuple[int, int, int, int]]] = {}
        for idx, label, kind in self._mention_lists:
            hits = spans[idx]
            if not hits:
                continue
            mine = per_label.setdefault(label, [])
            taken = [(s, e) for s, e, _, _ in mine]
            for s, e in hits:
                # Same-label overlaps: negative phrases, then mentions, uncertain ones, neutral ones.
                if not any(s < te and ts < e for ts, te in taken):
                    mine.append((s, e, label, kind))
        found: list[tuple[int, int, int, int]] = []
        for label, mine in per_label.items():
            un = spans[self._unmention_lists[label]] if label in self._unmention_lists else None
            if un:
                # An unmention overlapping a mention drops it, unless the mention is the longer phrase
                # that holds it ("pleural or pericardial effusion" is a pleural effusion).
                mine = [
                    x
                    for x in mine
                    if not any(x[0] < ue and us < x[1] and not holds(x, us, ue) for us, ue in un)
                ]
            found += mine
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
            found.sort()
        return found

    def _find_triggers(
        self, spans: list[list[tuple[int, int]]]
    ) -> tuple[list[_Trigger], list[_Trigger], list[int]]:
        hits: list[tuple[int, int, str, str, str, int]] = []
        for idx, side, pol, applies, window in self._trigger_lists:
            hits += [(s, e, side, pol, applies, window) for s, e in spans[idx]]
        # Longest match wins among overlapping triggers ("cannot be excluded" over "not").
        hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
        pre: list[_Trigger] = []
        post: list[_Trigger] = []
        term: list[int] = []
        last = (-1, -1)
        for s, e, side, pol, applies, window in hits:
            # The same words may act both ways ("normal heart", "heart size normal").
            if s < last[1] and (s, e) != last:
                continue
            last = (s, e)
            if pol == TERM:
                term.append(s)
            elif pol == "none":
                continue
            elif side == "pre":
                pre.append((s, e, pol, applies, window))
            else:
                post.append((s, e, pol, applies, window))
        return pre, post, term

    def _classify(
        self,
        t: str,
        bounds: list[int],
        s: int,
        e: int,
        label: int,
        kind: int,
        pre: list[_Trigger],
        post: list[_Trigger],
        term: list[int],
        found: list[tuple[int, int, int, int]],
    ) -> int | None:
        """The value of one mention; None = drop it (e.g. "correlation for infection")."""
        if kind == NEGATIVE:
            return 0  # "osseous structures are intact": absent by itself
        sent = bisect_right(bounds, s)
        sent_start = bounds[sent - 1] if sent > 0 else 0
        sent_end = bounds[sent] if sent < len(bounds) else len(t)
        neutral = kind == NEUTRAL
        pols: list[str] = []
        # Nearest applicable pre-trigger before the mention, in its sentence, if its scope reaches.
        for ts, te, pol, applies, window in reversed(pre[: bisect_left(pre, (s,))]):
            if ts < sent_start:
                break
            if applies != "all" and (applies == "neutral") != neutral:
                continue
            stop = next_start(term, te, sent_end)
            if stop >= s and forward_in_scope(
                t, min(te, s), s, stop, window=window, max_words=self.max_list_words
            ):
                # "no increase in septal thickness": the change word is the finding's own, so "no"
                # negates it (a pseudo trigger reaching into the mention is no "no change in").
                pols.append(NEG if pol == PSEUDO and te > s else pol)
            break
        # Nearest applicable post-trigger after the mention, in its sentence, if its scope reaches.
        for ts, _te, pol, applies, _w in post[bisect_left(post, (e,)) :]:
            if ts >= sent_end:
                break
            if applies != "all" and (applies == "neutral") != neutral:
                continue
            if next_start(term, e, sent_end) >= ts and backward_in_scope(
                t, e, ts, window=self.max_post_words, max_words=self.max_list_words
            ):
                pols.append(pol)
            break
        if IGNORE in pols:
            return None
        if PSEUDO in pols:
            return -1 if neutral else 1  # "no change in heart size": stable, uncertain (CheXpert)
        if UNC1 in pols:
            return -1
        if NEG in pols:
            return 0
        if UNC in pols:
            return -1
        if neutral:
            if AFFIRM in pols:
                return 1
            if label in self._size_rules:  # "lymph nodes up to 13 mm": enlarged by size
                size = short_axis_mm(
                    t, max(sent_start, back_words(t, s, 4)), next_mention(found, e, label, sent_end)
                )
                if size is not None:
                    return 1 if size >= self._size_rules[label] else 0
            return None  # "heart size" alone says nothing about cardiomegaly
        if kind == SOFT or in_or_list(t, s, e, found, sent_start, sent_end):
            return -1  # "vascular congestion"; "atelectasis or pneumonia" (CheXpert's conj:or)
        return 1
