"""Using a trained model, what leaves the machine it was trained on: a classifier saved as a folder (adapters
or weights, head, tokenizer, manifest) and loaded back (:mod:`~dpcore.release.saved_model`), its model card
(:mod:`~dpcore.release.model_card`), fast inference on CPU (:mod:`~dpcore.release.inference`), labelling a
file of reports (:mod:`~dpcore.release.predict`) and the command ``dpcore predict``
(:mod:`~dpcore.release.cli`). It reads the engine's results and the foundations' models; it trains nothing.
"""

from dpcore.release.predict import predict_file, read_reports
from dpcore.release.saved_model import (
    MANIFEST,
    SavedClassifier,
    load_classifier,
    probabilities,
    read_manifest,
    save_classifier,
)

__all__ = [
    "MANIFEST",
    "SavedClassifier",
    "load_classifier",
    "predict_file",
    "probabilities",
    "read_manifest",
    "read_reports",
    "save_classifier",
]
