"""Orchestration, above the engine: the reports of a run (synthetic or a corpus on disk), the teacher's labels,
patient-level splits (:mod:`~dpcore.pipeline.splits`), the public warm start
(:mod:`~dpcore.pipeline.warm_start`), training through the results store (:mod:`~dpcore.pipeline.runs`) and
the store itself, keyed by configuration hash (:mod:`~dpcore.pipeline.results`). Notebooks, studies and the
command line run experiments through these functions.
"""

from dpcore.pipeline.results import ResultStore, archived_runs, code_fingerprint
from dpcore.pipeline.runs import run, train
from dpcore.pipeline.splits import SYNTHETIC, load_reports, make_teacher, prepare_splits
from dpcore.pipeline.warm_start import PUBLIC_SEED_OFFSET, public_config

__all__ = [
    "PUBLIC_SEED_OFFSET",
    "SYNTHETIC",
    "ResultStore",
    "archived_runs",
    "code_fingerprint",
    "load_reports",
    "make_teacher",
    "prepare_splits",
    "public_config",
    "run",
    "train",
]
