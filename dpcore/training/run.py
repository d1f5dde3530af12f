"""``train``: one configuration trained on its splits and evaluated, in every mode."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import datasets
import torch

from dpcore.config import MODE_DEFAULTS, RunConfig
from dpcore.labels import get_label_set
from dpcore.models import (
    build_model,
    load_tokenizer,
    parameter_counts,
    resolve_model_path,
)
from dpcore.training.checkpoints import restore_progress, save_progress
from dpcore.training.data import encode_splits, pad_collate
from dpcore.training.engine import build_engine, distributed_context, resolve_device, seed_everything
from dpcore.training.evaluation import evaluate_test, peak_memory_mb
from dpcore.training.features import frozen_features
from dpcore.training.loop import Loop
from dpcore.training.result import RunResult, library_versions


def train(
    cfg: RunConfig,
    splits: datasets.DatasetDict,
    *,
    label_column: str = "teacher_labels",
    reference_column: str = "labels",
    progress: bool = True,
    keep_model: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    stop_after_steps: int | None = None,
) -> RunResult:
    """Train one configuration on ``splits`` (``train``/``validation``/``test``) and evaluate it.

    The model learns ``label_column`` (the teacher's labels); validation loss is measured on the same kind
    of labels (all a real user has); test metrics are computed against both ``reference_column`` (ground
    truth, or the data set's shipped labels) and the teacher.

    Every step draws a logical batch (Poisson with rate ``1 / ceil(N / batch_size)`` under DP, a shuffled
    slice of the epoch otherwise), sorts it by length and runs it in physical chunks of ``physical_batch_size``.
    With ``checkpoint_dir``, the state is saved at the end of every epoch (and every ``checkpoint_every``
    steps), and a run that finds a checkpoint of the same configuration there resumes from it.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process trains on its shard with Opacus's DP data
    parallelism: the same sample rate and steps, so the same epsilon as one process.
    """
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    rank, world = distributed_context(device)
    label_names = list(get_label_set(cfg.teacher.label_set).labels)
    schedule = cfg.train.resolved()
    tokenizer = load_tokenizer(cfg.model.model)
    enc = encode_splits(cfg, splits, tokenizer, label_column)
    collate = pad_collate(tokenizer.pad_token_id or 0)
    n_train = len(enc["train"])
    if n_train == 0:
        raise ValueError("the training split is empty")
    if cfg.is_private and schedule.batch_size > n_train:
        raise ValueError(
            f"batch_size {schedule.batch_size} is larger than the {n_train} training reports: a Poisson "
            f"sample rate above 1 has no privacy meaning; set batch_size to at most {n_train} "
            "(DP needs large batches, so prefer more reports)"
        )
    steps_per_epoch = math.ceil(n_train / schedule.batch_size)
    # Opacus's DPDataLoader convention: q = 1 / steps, so an epoch sees N reports in expectation, as a
    # non-private epoch does (q = B / N would see B * ceil(N / B) of them: more, whenever B does not divide N).
    sample_rate = 1 / steps_per_epoch
    model = build_model(cfg.model, num_labels=len(label_names), mode=cfg.train.mode).to(device)
    if model.first_trainable:
        t_features = time.perf_counter()
        key = resolve_model_path(cfg.model.model)
        enc = {name: frozen_features(model, e, device=device, key=key) for name, e in enc.items()}
        feature_seconds = time.perf_counter() - t_features
    else:
        feature_seconds = 0.0
    start: dict[str, Any] = {}
    if cfg.train.warm_start:
        from dpcore.warm_start import load_weights, warm_start

        t_warm = time.perf_counter()
        public = warm_start(cfg)
        load_weights(model, public.weights)
        # What the public model alone scores on this run's test split: the reference a private fine-tuning
        # must beat to have learned anything from the private data.
        public_metrics, _ = evaluate_test(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threshold_policy="fixed")),
            model,
            enc,
            splits,
            pad_collate(tokenizer.pad_token_id or 0),
            device,
            label_column=label_column,
            reference_column=reference_column,
            label_names=label_names,
        )
        start = {
            "corpus": cfg.train.warm_start,
            "reports": public.reports,
            "config_hash": public.config_hash,
            "public_test_weighted_f1": public.public_weighted_f1,
            "test_vs_reference": public_metrics["test_vs_reference"],
            "seconds": time.perf_counter() - t_warm,
        }
    engine = build_engine(
        cfg,
        model,
        n_train=n_train,
        sample_rate=sample_rate,
        total_steps=steps_per_epoch * schedule.epochs,
        world=world,
    )
    sampler = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + rank)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    prog = restore_progress(folder, cfg, engine, sampler, rank=rank)
    loop = Loop(
        cfg=cfg,
        engine=engine,
        train_set=enc["train"],
        validation=enc["validation"],
        collate=collate,
        device=device,
        sampler=sampler,
        shard=torch.arange(rank, n_train, world),  # this process's examples
        steps_per_epoch=steps_per_epoch,
        epochs=schedule.epochs,
        sample_rate=sample_rate,
        world=world,
        save=lambda p, seconds: save_progress(folder, cfg, engine, sampler, p, seconds, rank=rank),
        progress_bar=progress and rank == 0,
    )
    stop_reason, train_seconds = loop.run(
        prog, checkpoint_every=checkpoint_every, stop_after_steps=stop_after_steps, folder=folder
    )

    privacy = engine.privacy
    if privacy is not None:
        privacy.steps = prog.step
        privacy.stop_reason = stop_reason
        if privacy.poisson_sampling and prog.records:
            privacy.epsilon_rdp, privacy.epsilon_prv = (
                prog.records[-1].epsilon_rdp,
                prog.records[-1].epsilon_prv,
            )
    metrics, thresholds = evaluate_test(
        cfg,
        engine.inner,
        enc,
        splits,
        collate,
        device,
        label_column=label_column,
        reference_column=reference_column,
        label_names=label_names,
    )
    extra: dict[str, Any] = {
        "stop_reason": stop_reason,
        "world_size": world,
        "physical_batch_size": cfg.train.resolved_physical_batch_size,
        # The schedule actually run (the mode's defaults filled in).
        "schedule": {k: getattr(schedule, k) for k in MODE_DEFAULTS[cfg.train.mode]},
        **({"warm_start": start} if start else {}),
        **thresholds,
    }
    return RunResult(
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        label_names=label_names,
        epochs=prog.records,
        metrics=metrics,
        privacy=privacy,
        data={name: len(enc[name]) for name in enc},
        parameters=parameter_counts(engine.inner),
        timings={
            "train_seconds": train_seconds,
            # The frozen layers' output, computed once (0 when every layer trains, or when cached).
            "feature_seconds": feature_seconds,
            "total_seconds": time.perf_counter() - t_start,
        },
        peak_memory_mb=peak_memory_mb(device),
        versions=library_versions(),
        extra=extra,
        model=engine.inner if keep_model else None,
    )
