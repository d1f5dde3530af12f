"""Synthetic corpus: contract, determinism, truth structure, metadata and patient splits."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from dpcore.data import (
    COLUMNS,
    DataError,
    binary_labels,
    check_no_patient_leak,
    dataset_meta,
    generate_reports,
    split_by_patient,
)
from dpcore.labels import CHEXPERT, CTRATE


@pytest.fixture(scope="module")
def cxr() -> datasets.Dataset:
    return generate_reports(kind="cxr", n=3000, seed=7)


def _matrix(ds: datasets.Dataset) -> np.ndarray:
    return np.array([[9 if v is None else v for v in row] for row in ds["labels"]])


def test_schema_and_meta(cxr):
    assert cxr.column_names == list(COLUMNS)
    assert len(cxr) == 3000
    assert len(set(cxr["id"])) == len(cxr)
    assert all(len(r) == len(CHEXPERT) for r in cxr["labels"])
    meta = dataset_meta(cxr)
    assert (meta.label_set, meta.source, meta.credentialed) == ("chexpert", "synthetic-cxr", False)
    assert all("FINDINGS:" in t and "IMPRESSION:" in t for t in cxr["text"][:50])
    assert all(f in t for f, t in zip(cxr["findings"][:50], cxr["text"][:50], strict=True))


def test_deterministic_in_seed():
    a = generate_reports(n=200, seed=3)
    b = generate_reports(n=200, seed=3)
    c = generate_reports(n=200, seed=4)
    assert a["text"] == b["text"] and a["labels"] == b["labels"]
    assert a["text"] != c["text"]


def test_no_finding_is_exclusive_and_devices_allowed(cxr):
    m = _matrix(cxr)
    nf = m[:, CHEXPERT.index("No Finding")]
    patho = [CHEXPERT.index(lab) for lab in CHEXPERT.labels if lab not in ("No Finding", "Support Devices")]
    active = np.isin(m[:, patho], (1, -1)).any(axis=1)
    assert set(np.unique(nf)) <= {1, 9}
    assert not (active & (nf == 1)).any()  # never beside a finding
    # Without a labelled finding No Finding holds, unless the Findings name another finding that CheXpert
    # counts against it (a calcified granuloma, degenerative change, ...): then it is left unasserted.
    unasserted = ~active & (nf != 1)
    other = ("granuloma", "degenerative", "calcifi", "hyperinflated", "hernia", "eventration")
    named = [any(w in cxr[int(i)]["findings"].lower() for w in other) for i in np.flatnonzero(unasserted)]
    assert unasserted.any() and np.mean(named) > 0.95  # the rest: the word took one of the corpus's typos
    sd = m[:, CHEXPERT.index("Support Devices")] == 1
    assert (sd & (nf == 1)).any()  # CheXpert allows devices in a report without findings


def test_prevalence_and_cooccurrence_are_realistic(cxr):
    y = binary_labels(cxr)
    prev = dict(zip(CHEXPERT.labels, y.mean(axis=0), strict=True))
    assert 0.25 < prev["No Finding"] < 0.45
    assert 0.2 < prev["Support Devices"] < 0.4
    assert prev["Pleural Other"] < 0.05 and prev["Fracture"] < 0.06  # imbalance like MIMIC-CXR
    edema, cardio, eff = (y[:, CHEXPERT.index(k)] for k in ("Edema", "Cardiomegaly", "Pleural Effusion"))
    assert cardio[edema == 1].mean() > 2 * cardio.mean()
    assert eff[edema == 1].mean() > 1.5 * eff.mean()
    m = _matrix(cxr)
    assert (m == -1).any(axis=0)[1:13].all()  # every pathology has hedged mentions
    assert (m == 0).sum() > (m == -1).sum()  # negations are common


def test_findings_length_and_variety(cxr):
    words = np.array([len(f.split()) for f in cxr["findings"]])
    assert 30 <= np.median(words) <= 80
    assert np.percentile(words, 99) <= 120
    assert len(set(cxr["findings"])) > 0.98 * len(cxr)
    text = " ".join(cxr["findings"])
    for form in ("No ", "cannot be excluded", "Possible", "pericardial effusion", "granuloma"):
        assert form in text


def test_positive_labels_are_stated_in_findings(cxr):
    # Ground truth comes from the Findings: a pneumothorax label needs a pneumothorax sentence, and
    # no other sentence may mention it. Rare typos ("pnemuothorax") are the only exception.
    j = CHEXPERT.index("Pneumothorax")
    missing = 0
    for row, f in zip(cxr["labels"], cxr["findings"], strict=True):
        said = "pneumothora" in f.lower() or "ptx" in f.lower()
        if row[j] is None:
            assert not said, f
        else:
            missing += not said
    assert missing < 0.01 * len(cxr)


def test_patients_have_several_studies(cxr):
    _, counts = np.unique(cxr["patient_id"], return_counts=True)
    assert counts.max() > 3 and 1.5 < counts.mean() < 4


def test_each_patient_has_one_sex_and_only_women_have_breast_tissue(cxr):
    import re

    female_of: dict[str, set[bool]] = {}
    for text, findings, patient in zip(cxr["text"], cxr["findings"], cxr["patient_id"], strict=True):
        word = re.search(r"\b(man|woman|male|female)\b", text)
        if word:
            female = word.group(1) in ("woman", "female")
            female_of.setdefault(patient, set()).add(female)
            assert female or "breast" not in findings.lower(), (
                f"a male patient's report mentions breast: {findings}"
            )
    assert all(len(v) == 1 for v in female_of.values())
    shares = [next(iter(v)) for v in female_of.values()]
    assert 0.4 < np.mean(shares) < 0.8 and sum("breast" in f.lower() for f in cxr["findings"]) > 10


def test_patient_details_and_canaries():
    canary = "My canary phrase is 7719 bluebird."
    ds = generate_reports(n=1000, seed=0, patient_details=True, canaries=[canary], canary_repeats=3)
    planted = dataset_meta(ds).extra["canaries"]
    assert planted[0]["text"] == canary and len(planted[0]["ids"]) == 3
    carriers = {r["id"] for r in ds if "7719 bluebird" in r["findings"]}
    assert carriers == set(planted[0]["ids"])
    assert any("accession" in t for t in ds["text"])
    assert any(" x " in f and (" mm" in f or " cm" in f) for f in ds["findings"])
    plain = generate_reports(n=300, seed=0)
    assert not any("accession" in t for t in plain["text"])


def test_meta_survives_transformations(tmp_path, cxr):
    small = cxr.select(range(20))
    mapped = small.map(lambda r: {"n_words": len(r["findings"].split())})
    filtered = mapped.filter(lambda r: r["n_words"] > 5)
    filtered.save_to_disk(str(tmp_path / "ds"))
    back = datasets.load_from_disk(str(tmp_path / "ds"))
    for d in (small, mapped, filtered, back):
        assert dataset_meta(d) == dataset_meta(cxr)


def test_dataset_meta_rejects_foreign_dataset():
    with pytest.raises(ValueError, match="no dpcore metadata"):
        dataset_meta(datasets.Dataset.from_dict({"a": [1]}))


def test_split_by_patient(cxr):
    dd = split_by_patient(cxr, fractions=(0.7, 0.15, 0.15), seed=1)
    assert list(dd) == ["train", "validation", "test"]
    assert sum(len(d) for d in dd.values()) == len(cxr)
    assert abs(len(dd["train"]) / len(cxr) - 0.7) < 0.03
    check_no_patient_leak(dd)
    pats = [set(d["patient_id"]) for d in dd.values()]
    assert not (pats[0] & pats[1] or pats[0] & pats[2] or pats[1] & pats[2])
    assert dataset_meta(dd["test"]) == dataset_meta(cxr)
    again = split_by_patient(cxr, fractions=(0.7, 0.15, 0.15), seed=1)
    assert again["test"]["id"] == dd["test"]["id"]
    assert split_by_patient(cxr, fractions=(0.7, 0.15, 0.15), seed=2)["test"]["id"] != dd["test"]["id"]


def test_leak_check_names_the_patient(cxr):
    a = cxr.select(range(10))
    with pytest.raises(DataError, match=a[0]["patient_id"]):
        check_no_patient_leak({"train": a, "test": a.select([0])})


def test_split_rejects_bad_fractions(cxr):
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(cxr, fractions=(0.5, 0.5, 0.5))


def test_binary_view(cxr):
    m = _matrix(cxr)
    assert np.array_equal(binary_labels(cxr, policy="u-ones"), np.isin(m, (1, -1)).astype(int))
    assert np.array_equal(binary_labels(cxr, policy="u-zeros"), (m == 1).astype(int))


def test_twenty_thousand_reports_generate():
    # Functional check of the size the issue names; the timing lives in benchmarks/bench_corpus.py.
    ds = generate_reports(n=20_000, seed=0)
    assert len(ds) == 20_000 and len(set(ds["id"])) == 20_000


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown report kind"):
        generate_reports(kind="mri", n=3)  # type: ignore[arg-type]


def test_label_sets_known():
    assert len(CTRATE) == 18


def test_ct_reports():
    ds = generate_reports(kind="ct", n=1500, seed=2)
    meta = dataset_meta(ds)
    assert (meta.label_set, meta.source, meta.credentialed) == ("ctrate", "synthetic-ct", False)
    assert all(len(r) == len(CTRATE) for r in ds["labels"])
    assert all(t.startswith("Clinical Information:") and "\nFindings: " in t for t in ds["text"][:20])
    assert all(i.startswith(p + "_") for i, p in zip(ds["id"], ds["patient_id"], strict=True))
    y = binary_labels(ds)
    assert 0.3 < y[:, CTRATE.index("Lung nodule")].mean() < 0.6
    assert y[:, CTRATE.index("Pericardial effusion")].mean() < 0.15
    calc = y[:, CTRATE.index("Arterial wall calcification")]
    coro = y[:, CTRATE.index("Coronary artery wall calcification")]
    assert coro[calc == 1].mean() > 2 * coro.mean()
    words = np.array([len(f.split()) for f in ds["findings"]])
    assert 40 <= np.median(words) <= 120
