import numpy as np
import pytest

from dpcore.metrics import auroc_scores, evaluate, f1_scores


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
