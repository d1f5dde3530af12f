"""The engine: training for every mode, the Opacus wiring, and the typed result of a run.

It sits above the foundations (configuration, labels, models, privacy accounting, metrics) and below the
orchestration (:mod:`dpcore.pipeline`: data, teacher, warm start, results store), which calls it with
prepared splits and, for a warm start, the initial weights.

The contract with Opacus is a *per-example* loss: binary cross-entropy averaged over the labels gives a
vector of shape ``[B]``; the loop reduces it with a mean (Opacus's ``loss_reduction="mean"``).

One module a concern: :mod:`~dpcore.training.data` (encoding, padding, batches, the loss),
:mod:`~dpcore.training.features` (frozen layers computed once),
:mod:`~dpcore.training.initial` (weights a run starts from, such as a public warm start's), :mod:`~dpcore.training.units` (units of privacy),
:mod:`~dpcore.training.private` (Opacus),
:mod:`~dpcore.training.engine` (optimiser, schedule, noise, budget), :mod:`~dpcore.training.loop` (epochs and
steps), :mod:`~dpcore.training.checkpoints`, :mod:`~dpcore.training.evaluation`,
:mod:`~dpcore.training.result` and :mod:`~dpcore.training.run` (``train``).
"""

from dpcore.training.checkpoints import CHECKPOINT_STATE, load_checkpoint, save_checkpoint
from dpcore.training.data import (
    IGNORE,
    EncodedReports,
    encode,
    length_sorted_chunks,
    pad_collate,
    per_example_loss,
    poisson_indices,
    targets_from_labels,
)
from dpcore.training.engine import build_optimizer, resolve_device, seed_everything
from dpcore.training.evaluation import predict, tune_thresholds
from dpcore.training.features import _FEATURE_CACHE, frozen_features
from dpcore.training.initial import InitialWeights
from dpcore.training.loop import TrainingInterrupted
from dpcore.training.private import PerExampleLoss, PrivateParts, make_private, reused_parameters, train_step
from dpcore.training.result import EpochRecord, PrivacyReport, RunResult, library_versions
from dpcore.training.run import train
from dpcore.training.units import PrivacyUnits

__all__ = [
    "CHECKPOINT_STATE",
    "IGNORE",
    "_FEATURE_CACHE",
    "EncodedReports",
    "EpochRecord",
    "InitialWeights",
    "PerExampleLoss",
    "PrivacyReport",
    "PrivacyUnits",
    "PrivateParts",
    "RunResult",
    "TrainingInterrupted",
    "build_optimizer",
    "encode",
    "frozen_features",
    "length_sorted_chunks",
    "library_versions",
    "load_checkpoint",
    "make_private",
    "pad_collate",
    "per_example_loss",
    "poisson_indices",
    "predict",
    "resolve_device",
    "reused_parameters",
    "save_checkpoint",
    "seed_everything",
    "targets_from_labels",
    "train",
    "train_step",
    "tune_thresholds",
]
