"""The data half of an experiment: reports -> teacher labels -> patient-level splits, as plain functions."""

from __future__ import annotations

from pathlib import Path

import datasets

from dpcore.config import DataConfig, RunConfig, TeacherConfig
from dpcore.data import dataset_meta, generate_reports, split_by_patient
from dpcore.labeling import RuleTeacher, label_dataset

SYNTHETIC = {"synthetic-cxr": "cxr", "synthetic-ct": "ct"}


def load_reports(cfg: DataConfig) -> datasets.Dataset:
    """The report corpus of ``cfg``: a synthetic corpus, or a folder in the common schema.

    ``corpus="disk"`` reads ``data_path``, a dataset saved with ``save_to_disk`` (``dpcore corpus load``
    writes real MIMIC-CXR, CT-RATE or CSV sources in that form).
    """
    if cfg.corpus in SYNTHETIC:
        return generate_reports(kind=SYNTHETIC[cfg.corpus], n=cfg.n_reports, seed=cfg.data_seed)
    if cfg.corpus == "disk":
        if not cfg.data_path:
            raise ValueError("corpus 'disk' needs data_path, a folder written by `dpcore corpus load`")
        path = Path(cfg.data_path)
        if not path.is_dir():
            raise FileNotFoundError(f"data_path {path} is not a folder")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = datasets.concatenate_datasets(list(ds.values()))
        dataset_meta(ds)  # fails clearly if the folder is not in the common schema
        return ds
    raise ValueError(f"unknown corpus {cfg.corpus!r}; use one of {sorted(SYNTHETIC) + ['disk']}")


def make_teacher(cfg: TeacherConfig) -> RuleTeacher:
    """The teacher named by ``cfg`` (the rule labeler; LLM teachers label through ``dpcore label``)."""
    if cfg.teacher == "rules":
        return RuleTeacher(label_set=cfg.label_set)
    raise ValueError(f"unknown teacher {cfg.teacher!r}; the training pipeline knows 'rules' and 'truth'")


def prepare_splits(cfg: RunConfig) -> datasets.DatasetDict:
    """Reports with a ``teacher_labels`` column, split by patient."""
    ds = load_reports(cfg.data)
    meta = dataset_meta(ds)
    if meta.label_set != cfg.teacher.label_set:
        raise ValueError(
            f"corpus {cfg.data.corpus!r} carries {meta.label_set} labels but the teacher uses "
            f"label_set={cfg.teacher.label_set!r}"
        )
    if cfg.teacher.teacher == "truth":
        # An oracle teacher: the reference labels themselves (an upper bound for the student).
        ds = ds.add_column("teacher_labels", ds["labels"], feature=ds.features["labels"])
    else:
        ds = label_dataset(ds, teacher=make_teacher(cfg.teacher), text_column=cfg.data.text_column)
    return split_by_patient(ds, fractions=cfg.data.split_fractions, seed=cfg.data.data_seed)
