"""One experiment end to end: splits, the public warm start when the configuration asks for one, training,
and the results store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from dpcore import training
from dpcore.config import RunConfig
from dpcore.pipeline.results import ResultStore
from dpcore.pipeline.splits import prepare_splits
from dpcore.pipeline.warm_start import warm_start
from dpcore.training import RunResult


def train(cfg: RunConfig, splits: datasets.DatasetDict, **options: Any) -> RunResult:
    """:func:`dpcore.training.train` on ``splits``, first training the public warm start that ``cfg`` names
    (once per process) and starting from its weights. ``options`` go to the engine as they are."""
    initial = warm_start(cfg) if cfg.train.warm_start else None
    return training.train(cfg, splits, initial=initial, **options)


def run(
    cfg: RunConfig,
    *,
    store: ResultStore | None = None,
    splits: datasets.DatasetDict | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> RunResult:
    """Train and evaluate ``cfg``, through ``store`` when given (a stored result is returned as it is).

    With ``checkpoint_dir``, training saves its state there every epoch and resumes from it after a kill.
    """

    def fresh(c: RunConfig) -> RunResult:
        data = splits if splits is not None else prepare_splits(c)
        return train(c, data, progress=progress, checkpoint_dir=checkpoint_dir)

    return store.get_or_run(cfg, fresh) if store is not None else fresh(cfg)
