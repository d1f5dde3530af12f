import numpy as np
import pytest
from sklearn.metrics import f1_score

from dpcore.metrics import (
    auroc_scores,
    bootstrap_counts,
    bootstrap_f1,
    evaluate,
    f1_from_counts,
    f1_scores,
)


def test_weighted_f1_weights_labels_by_support():
    # label a: 3 positives, all found (F1 1); label b: 1 positive, missed (F1 0).
    y_true = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    y_pred = np.array([[1, 0], [1, 0], [1, 0], [0, 0]])
    m = f1_scores(y_true, y_pred, label_names=["a", "b"])
    assert m["per_label"] == {"a": 1.0, "b": 0.0}
    assert m["weighted"] == pytest.approx(0.75)
    assert m["macro"] == pytest.approx(0.5)
    assert m["micro"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))


def test_auroc_skips_labels_with_one_class():
    m = auroc_scores([[1, 0], [0, 0]], [[0.9, 0.2], [0.1, 0.3]], label_names=["a", "b"])
    assert m["per_label"] == {"a": 1.0, "b": None}
    assert m["macro"] == 1.0


def test_evaluate_thresholds_per_label():
    probs = np.array([[0.6, 0.6]])
    m = evaluate([[1, 1]], probs, label_names=["a", "b"], threshold=[0.5, 0.7])
    assert m["predicted_positive"] == {"a": 1, "b": 0}


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 label columns but 3 label names"):
        f1_scores([[1, 0]], [[1, 0]], label_names=["a", "b", "c"])


def _noisy(n: int, labels: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference labels with varied prevalence (one label never positive), and predictions with errors."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.0, 0.4, labels)
    y_true = (rng.random((n, labels)) < prevalence).astype(int)
    flip = rng.random((n, labels)) < 0.15
    return y_true, np.where(flip, 1 - y_true, y_true) * (prevalence > 0)


def test_vectorised_resamples_agree_with_sklearn():
    y_true, y_pred = _noisy(60)
    counts = bootstrap_counts(len(y_true), n_resamples=25, seed=3)
    assert counts.shape == (25, 60) and (counts.sum(axis=1) == 60).all()
    fast = f1_from_counts(y_true, y_pred, counts)
    for r, row in enumerate(counts):
        rows = np.repeat(np.arange(len(y_true)), row)
        for average in ("weighted", "micro", "macro"):
            expected = f1_score(y_true[rows], y_pred[rows], average=average, zero_division=0)
            assert fast[average][r] == pytest.approx(expected, abs=1e-12), (r, average)
        expected = f1_score(y_true[rows], y_pred[rows], average=None, zero_division=0)
        assert fast["per_label"][r] == pytest.approx(expected, abs=1e-12), r


def test_zero_support_and_no_predictions_behave_as_sklearn():
    y_true = np.array([[1, 0], [0, 0], [1, 0]])
    y_pred = np.array([[1, 0], [1, 0], [0, 0]])
    fast = f1_from_counts(y_true, y_pred, np.ones((1, 3)))
    for average in ("weighted", "micro", "macro"):
        assert fast[average][0] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0))
    nothing = f1_from_counts(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((1, 2)))
    assert [nothing[k][0] for k in ("weighted", "micro", "macro")] == [0.0, 0.0, 0.0]


def test_interval_contains_the_estimate_and_narrows_with_n():
    widths = []
    for n in (100, 1600):
        y_true, y_pred = _noisy(n, seed=1)
        point = f1_scores(y_true, y_pred, label_names=list("abcdef"))
        ci = bootstrap_f1(y_true, y_pred, label_names=list("abcdef"), n_resamples=500)
        for key in ("weighted", "micro", "macro"):
            lo, hi = ci[key]
            assert lo <= point[key] <= hi, (n, key, ci[key], point[key])
        for label, (lo, hi) in ci["per_label"].items():
            assert lo <= point["per_label"][label] <= hi, (n, label)
        widths.append(ci["weighted"][1] - ci["weighted"][0])
    assert widths[1] < widths[0] / 2  # about 1/sqrt(16) = 1/4 of the width


def test_bootstrap_is_deterministic_for_a_seed():
    y_true, y_pred = _noisy(200, seed=2)
    names = list("abcdef")
    first = bootstrap_f1(y_true, y_pred, label_names=names, n_resamples=300, seed=7)
    assert first == bootstrap_f1(y_true, y_pred, label_names=names, n_resamples=300, seed=7)
    assert first != bootstrap_f1(y_true, y_pred, label_names=names, n_resamples=300, seed=8)
    assert first["n_resamples"] == 300 and first["level"] == 0.95


def test_evaluate_adds_intervals_by_default_and_fast():
    import time

    rng = np.random.default_rng(0)
    y_true = (rng.random((1000, 18)) < 0.15).astype(int)
    probs = np.clip(0.5 * y_true + 0.6 * rng.random((1000, 18)), 0, 1)
    names = [f"l{j}" for j in range(18)]
    start = time.perf_counter()
    m = evaluate(y_true, probs, label_names=names)
    assert time.perf_counter() - start < 1.0
    lo, hi = m["f1_ci"]["weighted"]
    assert lo <= m["f1"]["weighted"] <= hi
    assert "f1_ci" not in evaluate(y_true, probs, label_names=names, n_resamples=0)
