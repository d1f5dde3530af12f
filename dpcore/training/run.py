"""``train``: one configuration trained on its splits and evaluated, in every mode."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from dpcore.config import MODE_DEFAULTS, RunConfig
from dpcore.labels import get_label_set
from dpcore.models import (
    build_model,
    load_tokenizer,
    parameter_counts,
    resolve_model_path,
    set_attention,
)
from dpcore.privacy import group_privacy
from dpcore.training.checkpoints import restore_progress, save_progress
from dpcore.training.coverage import covered_by_epsilon, outside_epsilon
from dpcore.training.data import EncodedReports, encode_splits, pad_collate
from dpcore.training.engine import (
    build_engine,
    distributed_context,
    random_sources,
    resolve_device,
    seed_everything,
)
from dpcore.training.evaluation import evaluate_test, example_losses, peak_memory_mb
from dpcore.training.features import frozen_features
from dpcore.training.initial import InitialWeights
from dpcore.training.loop import Loop
from dpcore.training.precision import probe, resolve_precision
from dpcore.training.result import PrivacyReport, RunResult, library_versions
from dpcore.training.units import PrivacyUnits, max_reports_per_patient


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
    release: bool = False,
    initial: InitialWeights | None = None,
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

    Under DP the unit of privacy is ``privacy_unit``: at ``patient`` the sampler draws patients and each
    patient's reports are one clipped contribution. ``release=True`` (a model saved to leave the machine)
    draws noise and sampling from the operating system's entropy unless ``privacy.secure`` says otherwise.

    A configuration with a ``warm_start`` starts from ``initial`` (the public run's weights, which
    :func:`dpcore.pipeline.train` trains first); the result records what those weights alone score on the
    test split, the reference a private fine-tuning must beat.
    """
    check_initial(cfg, initial)
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    rank, world = distributed_context(device)
    label_names = list(get_label_set(cfg.teacher.label_set).labels)
    schedule = cfg.train.resolved()
    tokenizer = load_tokenizer(cfg.model.model)
    enc = encode_splits(cfg, splits, tokenizer, label_column)
    collate = pad_collate(tokenizer.pad_token_id or 0)
    units = privacy_units(cfg, splits["train"], len(enc["train"]))
    n_units = len(units)
    if n_units == 0:
        raise ValueError("the training split is empty")
    if cfg.is_private and schedule.batch_size > n_units:
        raise ValueError(
            f"batch_size {schedule.batch_size} is larger than the {n_units} training {units.kind}s: a "
            f"Poisson sample rate above 1 has no privacy meaning; set batch_size to at most {n_units} "
            "(DP needs large batches, so prefer more reports)"
        )
    steps_per_epoch = math.ceil(n_units / schedule.batch_size)
    # Opacus's DPDataLoader convention: q = 1 / steps, so an epoch sees N units in expectation, as a
    # non-private epoch does (q = B / N would see B * ceil(N / B) of them: more, whenever B does not divide N).
    sample_rate = 1 / steps_per_epoch
    model = build_model(cfg.model, num_labels=len(label_names), mode=cfg.train.mode).to(device)
    precision = run_precision(cfg, device)
    attention = set_attention(model, cfg.model.attention, device)
    if model.first_trainable:
        t_features = time.perf_counter()
        key = resolve_model_path(cfg.model.model)
        enc = {
            name: frozen_features(model, e, device=device, key=key, precision=precision)
            for name, e in enc.items()
        }
        feature_seconds = time.perf_counter() - t_features
    else:
        feature_seconds = 0.0
    start: dict[str, Any] = {}
    if initial is not None:
        initial.load_into(model)
        public_metrics, _ = evaluate_test(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threshold_policy="fixed")),
            model,
            enc,
            splits,
            collate,
            device,
            label_column=label_column,
            reference_column=reference_column,
            label_names=label_names,
        )
        start = {**initial.source, "test_vs_reference": public_metrics["test_vs_reference"]}
    secure = cfg.is_private and (cfg.privacy.secure if cfg.privacy.secure is not None else release)
    generators = random_sources(seed=cfg.train.seed, rank=rank, secure=secure, noise_device=device)
    engine = build_engine(
        cfg,
        model,
        units=n_units,
        sample_rate=sample_rate,
        total_steps=steps_per_epoch * schedule.epochs,
        world=world,
        noise_generator=generators["noise"],
        secure=secure,
        example_inputs=tuple(
            t.to(device) for t in collate([enc["train"][i] for i in range(min(2, n_units))])[:2]
        ),
    )
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = data_fingerprint(enc["train"])
    prog = restore_progress(folder, cfg, engine, generators, rank=rank, data_fingerprint=fingerprint)
    loop = Loop(
        cfg=cfg,
        engine=engine,
        train_set=enc["train"],
        validation=enc["validation"],
        collate=collate,
        device=device,
        sampler=generators["sampler"],
        units=units,
        shard=torch.arange(rank, n_units, world),  # this process's units
        steps_per_epoch=steps_per_epoch,
        epochs=schedule.epochs,
        sample_rate=sample_rate,
        world=world,
        save=lambda p, seconds: save_progress(
            folder, cfg, engine, generators, p, seconds, rank=rank, data_fingerprint=fingerprint
        ),
        progress_bar=progress and rank == 0,
        precision=precision,
    )
    stop_reason, train_seconds = loop.run(
        prog, checkpoint_every=checkpoint_every, stop_after_steps=stop_after_steps, folder=folder
    )

    privacy = engine.privacy
    if privacy is not None:
        finish_privacy_report(privacy, prog.step, stop_reason, prog.records, splits["train"], units)
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
        # The forward pass's arithmetic, and (auto) what this machine's probe measured to choose it.
        "precision": precision,
        "attention": attention,
        **({"precision_probe": probe(device.type).to_dict()} if cfg.train.precision == "auto" else {}),
        # The schedule actually run (the mode's defaults filled in).
        "schedule": {k: getattr(schedule, k) for k in MODE_DEFAULTS[cfg.train.mode]},
        **({"warm_start": start} if start else {}),
        **thresholds,
    }
    if cfg.train.membership_sample:
        trained = torch.cat(units.reports).sort().values.numpy()
        extra["membership"] = membership_losses(cfg, engine.inner, enc, collate, device, trained=trained)
    result = RunResult(
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
        covered_by_epsilon=covered_by_epsilon(private=cfg.is_private),
        model=engine.inner if keep_model else None,
    )
    # Every field the result releases outside epsilon, read from the result itself (nothing forgotten).
    result.outside_epsilon = outside_epsilon(result.to_dict(), private=cfg.is_private)
    return result


def run_precision(cfg: RunConfig, device: torch.device) -> str:
    """The forward pass's arithmetic: the configured one, or the probe's choice; float32 under ghost
    clipping, whose per-sample norms are computed inside the backward pass (see the configuration)."""
    ghost = cfg.is_private and cfg.privacy.resolved_grad_sample_mode(cfg.train.mode) == "ghost"
    if ghost and cfg.train.precision == "auto":
        return "float32"
    return resolve_precision(cfg.train.precision, device)


def check_initial(cfg: RunConfig, initial: InitialWeights | None) -> None:
    """A warm-started configuration needs its initial weights, and initial weights need a configuration that
    names them: the configuration's hash must describe the run that the results store keeps."""
    if cfg.train.warm_start and initial is None:
        raise ValueError(
            f"warm_start={cfg.train.warm_start!r}: the engine starts from the public run's weights; train "
            "through dpcore.pipeline.train, which trains the public warm start first"
        )
    if initial is not None and not cfg.train.warm_start:
        raise ValueError("initial weights were given but the configuration names no warm_start")


def privacy_units(cfg: RunConfig, train_split: datasets.Dataset, n: int) -> PrivacyUnits:
    """The training split's units of privacy: its reports, or (``privacy_unit="patient"``) its patients."""
    if cfg.privacy.privacy_unit == "report":
        return PrivacyUnits.of_reports(n)
    if "patient_id" not in train_split.column_names:
        raise ValueError("privacy_unit 'patient' needs a patient_id column in the training split")
    return PrivacyUnits.of_patients(train_split["patient_id"], cap=cfg.privacy.max_reports_per_patient)


def finish_privacy_report(
    privacy: PrivacyReport,
    steps: int,
    stop_reason: str,
    records: list[Any],
    train_split: datasets.Dataset,
    units: PrivacyUnits,
) -> None:
    """Steps, epsilon by both accountants, and what the guarantee means for a patient."""
    privacy.steps, privacy.stop_reason = steps, stop_reason
    if records:
        privacy.epsilon_rdp, privacy.epsilon_prv = records[-1].epsilon_rdp, records[-1].epsilon_prv
    if "patient_id" in train_split.column_names:
        privacy.max_reports_per_patient = max_reports_per_patient(train_split["patient_id"])
    epsilon = privacy.epsilon_rdp if privacy.accountant == "rdp" else privacy.epsilon_prv
    if epsilon is None:
        return
    # At the patient unit a patient is one unit; at the report unit a patient with k reports is a group of k.
    k = 1 if units.kind == "patient" else privacy.max_reports_per_patient
    privacy.group_epsilon, privacy.group_delta = group_privacy(epsilon=epsilon, delta=privacy.delta, k=k)


def data_fingerprint(data: EncodedReports) -> str:
    """A hash of the training inputs and targets: a checkpoint resumes only on the same data."""
    h = hashlib.sha256()
    for ids in data.input_ids:
        h.update(ids.numpy().tobytes() + b"|")
    h.update(data.targets.numpy().tobytes())
    return h.hexdigest()[:16]


def membership_losses(
    cfg: RunConfig,
    model: torch.nn.Module,
    enc: dict[str, EncodedReports],
    collate: Any,
    device: torch.device,
    *,
    trained: np.ndarray,
) -> dict[str, Any]:
    """Per-example losses of ``membership_sample`` random training reports (members) and as many test
    reports (non-members), against the teacher's labels: the input of a membership attack, outside epsilon.

    Members are drawn from ``trained``, the rows of the training split that the sampler could draw: a report
    that the per-patient cap left out was never trained on, and counting it a member would understate the
    attack.
    """
    k = cfg.train.membership_sample
    rng = np.random.default_rng(cfg.train.seed)
    members = np.sort(rng.choice(trained, size=min(k, len(trained)), replace=False))
    nonmembers = np.sort(rng.choice(len(enc["test"]), size=min(k, len(enc["test"])), replace=False))

    def losses(data: EncodedReports, rows: np.ndarray) -> list[float]:
        subset = EncodedReports([data.input_ids[i] for i in rows], data.targets[rows].numpy())
        return [float(x) for x in example_losses(model, subset, collate, device)]

    return {
        "outside_epsilon": True,
        "labels": "teacher",
        "member_loss": losses(enc["train"], members),
        "nonmember_loss": losses(enc["test"], nonmembers),
        # Rows of the training and test splits, so that an attack can score the same reports with a
        # reference model (a calibrated attack).
        "member_index": [int(i) for i in members],
        "nonmember_index": [int(i) for i in nonmembers],
    }
