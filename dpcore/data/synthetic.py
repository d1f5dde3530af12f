"""Seeded synthetic radiology reports with exact ground truth (chest X-ray and chest CT).

The label states of each study are sampled first (latent conditions such as heart failure or an ICU stay
make findings co-occur; a patient keeps some of them across studies); then the FINDINGS are written from
the phrase bank so that every sampled state is stated exactly once, as a positive, hedged or negated
sentence, and nothing else in the Findings mentions a label. The ground truth therefore *is* what the
Findings say. Phrase banks are data files (``dpcore/data/phrases/{cxr,ct}.yml``).

>>> ds = generate_reports(kind="cxr", n=5, seed=1)
>>> ds.column_names
['id', 'patient_id', 'findings', 'impression', 'text', 'labels']
>>> len(ds), len(ds[0]["labels"]), dataset_meta(ds).label_set
(5, 14, 'chexpert')
>>> generate_reports(kind="cxr", n=5, seed=1)["text"] == ds["text"]
True
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import datasets
import numpy as np
import yaml

from dpcore.data.schema import dataset_meta, make_dataset
from dpcore.labels import get_label_set

__all__ = ["generate_reports", "load_bank", "dataset_meta"]

Kind = Literal["cxr", "ct"]
_NONE = 9  # code for "not mentioned" in the int8 state matrix
_SLOT = re.compile(r"\{(\w+)\}")
_SPACES = re.compile(r"\s{2,}")
_SPACE_PUNCT = re.compile(r"\s+([,.;])")


@functools.cache
def load_bank(kind: Kind) -> dict[str, Any]:
    """The phrase bank of ``kind`` (``cxr`` or ``ct``), parsed from its YAML file.

    >>> sorted(load_bank("cxr")["labels"])[:2]
    ['Atelectasis', 'Cardiomegaly']
    """
    if kind not in ("cxr", "ct"):
        raise ValueError(f"unknown report kind {kind!r}; use 'cxr' or 'ct'")
    text = resources.files("dpcore.data").joinpath("phrases", f"{kind}.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


class _Writer:
    """Renders one report at a time from a phrase bank; one instance per generate call (holds the rng)."""

    def __init__(self, bank: dict[str, Any], labels: tuple[str, ...], rng: random.Random) -> None:
        self.bank, self.labels, self.rng = bank, labels, rng
        self.slots: dict[str, list[str]] = {k: [str(v) for v in vs] for k, vs in bank["slots"].items()}
        self.local: dict[str, str] = {}
        self.memo: dict[str, str] = {}
        self.combos = [(c["text"], dict(c["labels"])) for c in bank.get("combos", [])]
        self.fillers = bank.get("fillers", [])
        self.distractors = bank.get("distractors", [])
        self.other_finding = False  # whether the last Findings named a finding outside the labels
        abbr = bank.get("abbreviations", {})
        self.abbr_rate = float(abbr.get("rate", 0.0))
        self.abbr = [
            (re.compile(rf"\b{re.escape(k)}\b"), v)
            for k, v in sorted(abbr.get("map", {}).items(), key=lambda kv: -len(kv[0]))
        ]
        self.typo_rate = float(bank.get("typos", {}).get("rate", 0.0))

    # -- text helpers -------------------------------------------------------------------------------
    def _slot(self, m: re.Match) -> str:
        name = m.group(1)
        key = name.lower()
        if key in self.local:
            value = self.local[key]
        elif key in self.memo:  # one slot name keeps one value within a sentence (same side twice)
            value = self.memo[key]
        else:
            try:
                value = self.rng.choice(self.slots[key])
            except KeyError:
                raise KeyError(f"phrase bank has no slot {key!r} (in template {m.string!r})") from None
            self.memo[key] = value
        return value[:1].upper() + value[1:] if name[0].isupper() else value

    def fill(self, template: str, **local: str) -> str:
        self.local, self.memo = local, {}
        text = _SLOT.sub(self._slot, template)
        text = _SPACE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()
        return text[:1].upper() + text[1:]

    def noise(self, sentence: str) -> str:
        """Abbreviations and typos at a low rate: surface variation that does not change the truth."""
        rng = self.rng
        if self.abbr and rng.random() < self.abbr_rate:
            for pat, short in self.abbr:
                sentence = pat.sub(short, sentence)
        if rng.random() < self.typo_rate:
            words = sentence.split(" ")
            long_words = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
            if long_words:
                i = rng.choice(long_words)
                w = words[i]
                j = rng.randrange(1, len(w) - 2)
                op = rng.randrange(3)
                w = (
                    (w[:j] + w[j + 1] + w[j] + w[j + 2 :])
                    if op == 0
                    else (w[:j] + w[j + 1 :] if op == 1 else w[:j] + w[j] + w[j:])
                )
                words[i] = w
                sentence = " ".join(words)
        return sentence

    @staticmethod
    def join_list(items: list[str], conj: str = "or") -> str:
        if len(items) == 1:
            return items[0]
        if len(items) == 2:
            return f"{items[0]} {conj} {items[1]}"
        return ", ".join(items[:-1]) + f", {conj} {items[-1]}"

    # -- one report ----------------------------------------------------------------------------------
    def findings(self, states: dict[str, int], extra: dict[str, str]) -> tuple[str, list[str], list[str]]:
        """Findings text, plus the positive and uncertain terms that the impression may summarise."""
        rng, bank = self.rng, self.bank
        lab = bank["labels"]
        todo = dict(states)
        self.other_finding = False  # set when a sentence names a finding CheXpert counts against No Finding
        out: list[tuple[float, str]] = []
        pos_terms: list[str] = []
        unc_terms: list[str] = []

        def region(label: str) -> float:
            return lab[label].get("region", 1) + rng.random() * 0.5

        # Sentences that state several labels at once, used when the sampled states match them exactly.
        for i in rng.sample(range(len(self.combos)), len(self.combos)):
            text, tags = self.combos[i]
            if rng.random() < 0.5 and all(todo.get(k) == v for k, v in tags.items()):
                first = next(iter(tags))
                out.append((region(first), self.fill(text, **extra)))
                for k, v in tags.items():
                    del todo[k]
                    (pos_terms if v == 1 else unc_terms if v == -1 else []).append(lab[k]["mentions"][0])

        negated: list[str] = []
        pending_np: list[tuple[str, str]] = []
        for label, v in todo.items():
            spec = lab[label]
            if v == 1:
                if spec.get("np") and (not spec.get("sentences") or rng.random() < 0.6):
                    np_text = self.fill(rng.choice(spec["np"]), **extra)
                    np_text = np_text[:1].lower() + np_text[1:] if not np_text[:3].isupper() else np_text
                    pending_np.append((label, np_text))
                    pos_terms.append(np_text)
                else:
                    out.append((region(label), self.fill(rng.choice(spec["sentences"]), **extra)))
                    pos_terms.append(spec["mentions"][0])
            elif v == -1:
                m = rng.choice(spec["mentions"])
                if spec.get("uncertain") and rng.random() < 0.5:
                    out.append((region(label), self.fill(rng.choice(spec["uncertain"]), **extra)))
                else:
                    out.append((region(label), self.fill(rng.choice(bank["hedge_one"]), m=m, M=m, **extra)))
                unc_terms.append(m)
            elif v == 0:
                r = rng.random()
                if spec.get("resolved") and r < 0.12:
                    out.append((region(label), self.fill(rng.choice(spec["resolved"]), **extra)))
                elif spec.get("negative") and r < 0.55:
                    out.append((region(label), self.fill(rng.choice(spec["negative"]), **extra)))
                else:
                    negated.append(label)

        # Positive noun phrases: alone in a wrapper, or two joined into one compound sentence.
        rng.shuffle(pending_np)
        while pending_np:
            label, a = pending_np.pop()
            if pending_np and rng.random() < 0.25:
                _, b = pending_np.pop()
                text = rng.choice(
                    [
                        "There is {a} and {b}.",
                        "{A} with {b}.",
                        "{A}, as well as {b}.",
                        "{A} and {b} are again seen.",
                    ]
                )
                out.append((region(label), self.fill(text, a=a, A=a, b=b)))
            else:
                out.append((region(label), self.fill(rng.choice(bank["wrap"]), np=a, Np=a, **extra)))

        # Negations: one per sentence, or grouped into lists ("No pleural effusion or pneumothorax.").
        rng.shuffle(negated)
        while negated:
            k = 1 if len(negated) == 1 or rng.random() < 0.4 else min(len(negated), rng.choice([2, 2, 3]))
            group, negated = negated[:k], negated[k:]
            terms = [rng.choice(lab[g]["mentions"]) for g in group]
            if k == 1:
                text = self.fill(rng.choice(bank["negate_one"]), m=terms[0], M=terms[0])
            else:
                text = self.fill(rng.choice(bank["negate_list"]), list=self.join_list(terms))
            out.append((min(region(g) for g in group), text))

        # Sentences that assert no label: fillers (unless they would contradict) and rare distractors.
        active = {k for k, v in states.items() if v in (1, -1)}
        n_fill = rng.choice((2, 3, 3, 4, 5))
        groups: set[str] = set()
        for f in rng.sample(self.fillers, len(self.fillers)):
            if n_fill <= 0 and len(out) >= 5:  # short reports get more fillers: Findings of 30+ words
                break
            group = f.get("group", f["text"])
            if active.intersection(f.get("unless", ())) or group in groups:
                continue
            if f.get("other_finding") and rng.random() >= OTHER_FINDING_RATE:
                continue
            groups.add(group)
            n_fill -= 1
            self.other_finding |= bool(f.get("other_finding"))
            out.append((f.get("region", 1) + rng.random() * 0.5, self.fill(f["text"], **extra)))
        if self.distractors and rng.random() < 0.12:
            d = rng.choice(self.distractors)
            self.other_finding |= bool(d.get("other_finding"))
            out.append((d.get("region", 1) + rng.random() * 0.5, self.fill(d["text"], **extra)))

        out.sort(key=lambda t: t[0])
        return " ".join(self.noise(s) for _, s in out), pos_terms, unc_terms

    def impression(self, pos: list[str], unc: list[str]) -> str:
        rng, bank = self.rng, self.bank
        if not pos and not unc:
            return rng.choice(bank["normal_impression"])
        parts = []
        if pos:
            picked = pos[:3]
            parts.append(self.fill(self.join_list(picked, "and") + "."))
        if unc:
            parts.append(self.fill(f"{rng.choice(bank['impression_hedge'])} {unc[0]}."))
        return " ".join(parts)


# How often a filler that names another finding is kept when drawn: real normal reports seldom name one.
OTHER_FINDING_RATE = 0.2


def _sample_latents(bank: dict, n: int, patient_of: np.ndarray, n_patients: int, rng: np.random.Generator):
    names = list(bank["latent"])
    p = np.array([bank["latent"][k] for k in names])
    per_patient = rng.random((n_patients, len(names))) < p
    fresh = rng.random((n, len(names))) < p
    keep = rng.random((n, len(names))) < 0.6  # a patient's chronic conditions persist across studies
    return names, np.where(keep, per_patient[patient_of], fresh)


def _sample_states(
    bank: dict, labels: tuple[str, ...], latents: np.ndarray, names: list[str], rng: np.random.Generator
) -> np.ndarray:
    n = latents.shape[0]
    states = np.full((n, len(labels)), _NONE, dtype=np.int8)
    for j, label in enumerate(labels):
        spec = bank["states"].get(label)
        if spec is None:
            continue
        probs = np.tile(np.asarray(spec["base"], dtype=float), (n, 1))
        for k, name in enumerate(names):
            if name in spec:
                probs[latents[:, k]] = spec[name]
        cum = np.cumsum(probs, axis=1)
        u = rng.random(n)[:, None]
        idx = (u >= cum).sum(axis=1)  # 0 pos, 1 unc, 2 neg, 3 not mentioned
        states[:, j] = np.array([1, -1, 0, _NONE], dtype=np.int8)[idx]
    if "No Finding" in labels:
        nf = labels.index("No Finding")
        patho = [j for j, lab in enumerate(labels) if lab not in ("No Finding", "Support Devices")]
        any_patho = np.isin(states[:, patho], (1, -1)).any(axis=1)
        states[:, nf] = np.where(any_patho, _NONE, 1)
    return states


def generate_reports(
    *,
    kind: Kind = "cxr",
    n: int = 2000,
    seed: int = 0,
    patient_details: bool = False,
    canaries: Sequence[str] = (),
    canary_repeats: int = 1,
    studies_per_patient: float = 2.5,
) -> datasets.Dataset:
    """``n`` synthetic reports of ``kind`` (``cxr``: 14 CheXpert labels, ``cxr``-style MIMIC layout;
    ``ct``: 18 CT-RATE labels, CT-RATE layout), deterministic in ``seed``.

    ``labels`` is the exact ground truth of the FINDINGS in the CheXpert scheme. Patients have on
    average ``studies_per_patient`` studies. ``patient_details`` adds patient-specific measurements
    (``24 x 17 mm``), dates and accession numbers. Each sentence of ``canaries`` is planted verbatim in
    the Findings of ``canary_repeats`` random reports (labels unchanged, so choose canaries that mention
    no finding); the ids that carry each canary are in ``dataset_meta(ds).extra["canaries"]``.

    >>> ds = generate_reports(n=50, seed=0, canaries=["The patient's lucky number is 4417."])
    >>> [c["ids"][0] in ds["id"] for c in dataset_meta(ds).extra["canaries"]]
    [True]
    >>> sum("4417" in t for t in ds["findings"])
    1
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if canary_repeats < 1 or (canaries and canary_repeats > n):
        raise ValueError(f"canary_repeats must be between 1 and n={n}, got {canary_repeats}")
    bank = load_bank(kind)
    label_set = get_label_set(bank["label_set"])
    labels = label_set.labels
    nrng = np.random.default_rng(seed)
    prng = random.Random(seed)

    # Patients: study counts ~ 1 + geometric, until n studies are covered.
    counts = 1 + nrng.geometric(1.0 / max(studies_per_patient, 1.0), size=max(n, 1)) - 1
    n_patients = int(np.searchsorted(np.cumsum(counts), n) + 1) if n else 0
    patient_of = np.repeat(np.arange(n_patients), counts[:n_patients])[:n]
    patient_num = nrng.choice(9_000_000, size=n_patients, replace=False) + 10_000_000
    study_num = nrng.choice(9_000_000, size=n, replace=False) + 50_000_000

    names, latents = _sample_latents(bank, n, patient_of, n_patients, nrng)
    states = _sample_states(bank, labels, latents, names, nrng)

    writer = _Writer(bank, labels, prng)
    style = bank["style"]
    patient_extra: dict[int, dict[str, str]] = {}
    ids, pids, findings, impressions, texts, label_lists = [], [], [], [], [], []
    for i in range(n):
        p = int(patient_of[i])
        row = states[i]
        st = {labels[j]: int(v) for j, v in enumerate(row) if v != _NONE and labels[j] != "No Finding"}
        extra: dict[str, str] = {}
        if patient_details:
            if p not in patient_extra:
                a, b = prng.randint(6, 40), prng.randint(5, 30)
                patient_extra[p] = {"mm": f"{a} x {b}", "cm": f"{a / 10:.1f} x {b / 10:.1f}"}
            extra = patient_extra[p]
        f, pos, unc = writer.findings(st, extra)
        if writer.other_finding and "No Finding" in labels:
            row[labels.index("No Finding")] = (
                _NONE  # CheXpert: another finding, so No Finding is not asserted
            )
        imp = writer.impression(pos, unc)
        if style == "mimic":
            pid, rid = f"p{patient_num[p]}", f"s{study_num[i]}"
        else:
            pid = f"train_{patient_num[p] - 10_000_000}"
            k = i - int(np.searchsorted(patient_of, p))  # scan index within the patient
            rid = f"{pid}_{chr(97 + k % 26)}_{1 + k // 26}"  # CT-RATE VolumeName without .nii.gz
        ids.append(rid)
        pids.append(pid)
        findings.append(f)
        impressions.append(imp)
        texts.append("")  # assembled after canaries are planted
        label_lists.append([None if v == _NONE else int(v) for v in row])

    planted = []
    for c in canaries:
        rows = prng.sample(range(n), canary_repeats)
        for r in rows:
            sents = findings[r].split(". ")
            at = prng.randrange(len(sents) + 1)
            findings[r] = ". ".join(sents[:at] + [c.rstrip(".")] + sents[at:]).strip()
            if not findings[r].endswith("."):
                findings[r] += "."
        planted.append({"text": c, "ids": [ids[r] for r in rows]})

    female = _patient_sexes(findings, patient_of, n_patients, seed)
    for i in range(n):
        sex = female[int(patient_of[i])]
        texts[i] = _assemble(bank, prng, findings[i], impressions[i], patient_details, female=sex)

    return make_dataset(
        {
            "id": ids,
            "patient_id": pids,
            "findings": findings,
            "impression": impressions,
            "text": texts,
            "labels": label_lists,
        },
        label_set=label_set.name,
        source=f"synthetic-{kind}",
        credentialed=False,
        extra={"seed": seed, "n": n, "patient_details": patient_details, "canaries": planted},
    )


_FEMALE = {"man": "woman", "male": "female"}
_MALE = {"woman": "man", "female": "male"}


def _patient_sexes(findings: list[str], patient_of: np.ndarray, n_patients: int, seed: int) -> list[bool]:
    """Each patient's sex (True: female), the same in all their reports: female where any of their Findings
    mentions breast tissue, else drawn from a generator of its own (so that every other word of a corpus is
    what it was before patients had a sex).

    >>> _patient_sexes(["Dense breast tissue limits evaluation.", "Clear lungs.", "Clear."], np.array([0, 1, 1]), 2, 0)[0]
    True
    """
    female = [bool(x) for x in np.random.default_rng([seed, 7]).random(n_patients) < 0.5]
    for text, p in zip(findings, patient_of, strict=True):
        if "breast" in text.lower():
            female[int(p)] = True
    return female


def _assemble(
    bank: dict, rng: random.Random, findings: str, impression: str, details: bool, *, female: bool
) -> str:
    """The whole report around Findings and Impression, in the layout of the source it imitates."""
    ind = rng.choice(bank["indication"])
    # The draw picks the wording (a noun or an adjective); the patient fixes the sex.
    word = rng.choice(("man", "woman", "male", "female"))
    word = (_FEMALE if female else _MALE).get(word, word)
    ind = ind.replace("{sex}", word)
    tech = rng.choice(bank["technique"])
    if details:
        date = f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2011, 2019)}"
        comparison = f"Study from {date}, accession {rng.randint(10**7, 10**8 - 1)}."
    else:
        comparison = rng.choice(("___", "None.", "Prior study from ___.", "___ chest radiograph."))
    if bank["style"] == "mimic":
        return (
            f"{' ' * 33}FINAL REPORT\n EXAMINATION:  {rng.choice(bank['examination'])}\n \n"
            f" INDICATION:  {ind}\n \n TECHNIQUE:  {tech}\n \n COMPARISON:  {comparison}\n \n"
            f" FINDINGS:\n \n {findings}\n \n IMPRESSION:\n \n {impression}\n"
        )
    return (
        f"Clinical Information: {ind}\nTechnique: {tech}\nComparison: {comparison}\n"
        f"Findings: {findings}\nImpression: {impression}"
    )
