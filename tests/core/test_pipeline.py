"""The pipeline on a real-format source: `dpcore corpus load` output feeds training unchanged."""

from __future__ import annotations

import pytest

from dpcore.cli import main
from dpcore.config import RunConfig
from dpcore.data import dataset_meta
from dpcore.data.fixtures import write_mimic_fixture
from dpcore.pipeline import load_reports, prepare_splits


def test_mimic_layout_loads_labels_and_splits_through_disk(tmp_path, capsys):
    paths = write_mimic_fixture(tmp_path / "mimic")
    out = tmp_path / "common"
    argv = ["corpus", "load", "mimic-cxr", "--reports", str(paths["zip"]), "--labels", str(paths["labels"])]
    assert main([*argv, "--out", str(out)]) == 0
    cfg = RunConfig.from_flat({"corpus": "disk", "data_path": str(out)})
    ds = load_reports(cfg.data)
    assert dataset_meta(ds).credentialed is True
    splits = prepare_splits(cfg)
    assert sum(len(s) for s in splits.values()) == len(ds)
    assert all("teacher_labels" in s.column_names for s in splits.values())
    patients = [set(s["patient_id"]) for s in splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_disk_corpus_needs_a_path_and_a_matching_label_set(tmp_path):
    with pytest.raises(ValueError, match="needs data_path"):
        load_reports(RunConfig.from_flat({"corpus": "disk"}).data)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_reports(RunConfig.from_flat({"corpus": "disk", "data_path": str(tmp_path / "nope")}).data)
    with pytest.raises(ValueError, match="carries chexpert labels"):
        prepare_splits(RunConfig.from_flat({"n_reports": 20, "label_set": "ctrate"}))


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "config", "privacy", "corpus", "label"):
        assert command in text


def test_cli_config_resolves_overrides(capsys):
    assert (
        main(["config", "--set", "mode=dp-lora", "--set", "epsilon=0.5", "--set", "lora_targets=[query]"])
        == 0
    )
    text = capsys.readouterr().out
    assert "epsilon: 0.5" in text and "- query" in text
