"""Studies: expansion of the YAML grid, runs through the store (once), resume after a kill, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import dpcore.pipeline
import dpcore.pipeline.results
import dpcore.pipeline.runs
from dpcore.cli import main
from dpcore.pipeline.results import ResultStore
from dpcore.study import (
    Study,
    StudyError,
    aggregate_seeds,
    per_label_long,
    plan,
    run_study,
    save_table,
)
from dpcore.training import TrainingInterrupted

GRID = {
    "name": "grid",
    "description": "one line",
    "base": {"n_reports": 4000, "epochs": 3},
    "axes": {
        "corpus": [
            {"corpus": "synthetic-cxr", "label_set": "chexpert"},
            {"corpus": "synthetic-ct", "label_set": "ctrate"},
        ],
        "run": [{"mode": "lora"}, {"mode": "full"}, {"mode": "dp-lora", "epsilon": [0.01, 0.1, 1.0, 10.0]}],
    },
    "profiles": {
        "quick": {},
        "paper": {"base": {"n_reports": 50000}, "axes": {"seed": [{"seed": 0}, {"seed": 1}, {"seed": 2}]}},
        "dp-only": {"axes": {"run": [{"mode": "dp-lora", "epsilon": 1.0}]}},
    },
}


@pytest.fixture(autouse=True)
def _fixed_fingerprint(monkeypatch):
    """Other edits of dpcore while the tests run must not invalidate the store between two passes."""
    monkeypatch.setattr(dpcore.pipeline.results, "code_fingerprint", lambda: "test-code")


@pytest.fixture
def tiny_base(tiny_config) -> dict:
    keys = ("model", "n_reports", "max_length", "epochs", "batch_size", "lora_targets")
    return {k: v for k, v in tiny_config.to_flat().items() if k in keys}


def write_study(folder: Path, data: dict, name: str = "grid") -> Path:
    path = folder / "studies" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def calls(monkeypatch) -> dict[str, list]:
    """Count what trains and what prepares splits (through the real functions)."""
    seen: dict[str, list] = {"train": [], "splits": []}
    train, prepare = dpcore.pipeline.runs.train, dpcore.pipeline.prepare_splits

    def counting_train(cfg, splits, **kwargs):
        seen["train"].append(cfg.config_hash())
        return train(cfg, splits, **kwargs)

    def counting_prepare(cfg):
        seen["splits"].append((cfg.data.data_seed, cfg.teacher.label_set))
        return prepare(cfg)

    monkeypatch.setattr(dpcore.pipeline.runs, "train", counting_train)
    monkeypatch.setattr(dpcore.pipeline, "prepare_splits", counting_prepare)
    return seen


# -- expansion ----------------------------------------------------------------------------------------
def test_expansion_order_lists_profiles_and_overrides():
    study = Study.from_dict(GRID)
    quick = study.configs()
    assert len(quick) == 2 * 6
    assert [(c.data.corpus, c.train.mode, c.privacy.epsilon) for c in quick[:6]] == [
        ("synthetic-cxr", "lora", None),
        ("synthetic-cxr", "full", None),
        ("synthetic-cxr", "dp-lora", 0.01),
        ("synthetic-cxr", "dp-lora", 0.1),
        ("synthetic-cxr", "dp-lora", 1.0),
        ("synthetic-cxr", "dp-lora", 10.0),
    ]
    assert {c.teacher.label_set for c in quick[6:]} == {"ctrate"}
    assert all(c.data.n_reports == 4000 and c.train.epochs == 3 for c in quick)

    paper = study.configs("paper")  # base merged, a seed axis added last
    assert len(paper) == 36 and all(c.data.n_reports == 50000 and c.train.epochs == 3 for c in paper)
    assert [c.train.seed for c in paper[:4]] == [0, 1, 2, 0]

    replaced = study.configs("dp-only")  # the run axis replaced, in its place (corpus stays outer)
    assert [(c.data.corpus, c.train.mode) for c in replaced] == [
        ("synthetic-cxr", "dp-lora"),
        ("synthetic-ct", "dp-lora"),
    ]
    on_top = study.configs("dp-only", {"epochs": 1, "lora_targets": ["query"]})
    assert all(c.train.epochs == 1 and c.model.lora_targets == ("query",) for c in on_top)


def test_duplicates_appear_once_and_tuple_parameters_take_lists():
    study = Study.from_dict(
        {
            "axes": {
                "targets": [{"lora_targets": ["query", "value"]}, {"lora_targets": [["query"], ["value"]]}],
                "run": [{"mode": "lora"}, {"mode": "lora", "seed": 0}],  # seed 0 is the default: a duplicate
            }
        }
    )
    configs = study.configs()
    assert [c.model.lora_targets for c in configs] == [("query", "value"), ("query",), ("value",)]


def test_bad_keys_name_the_file_and_the_axis(tmp_path, monkeypatch):
    bad = {**GRID, "axes": {"run": [{"mode": "lora"}, {"mode": "dp-lora", "epsilom": 1.0}]}}
    path = write_study(tmp_path, bad)
    with pytest.raises(
        StudyError, match=r"grid\.yml: axes\.run\[1\]: unknown parameter 'epsilom'.*'epsilon'"
    ):
        Study.load(path)

    write_study(tmp_path, {**GRID, "axes": {"run": [{"mode": "lora", "epsilon": 1.0}]}})
    deeper = tmp_path / "deeper" / "still"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    study = Study.load("grid")  # a bare name, found by walking up
    assert study.path == path
    with pytest.raises(
        StudyError, match=r"grid\.yml: run\[0\] \(mode=lora, epsilon=1\.0\): epsilon only apply"
    ):
        study.configs()
    with pytest.raises(
        StudyError, match=r"unknown profile 'nope'; this study has \['quick', 'paper', 'dp-only'\]"
    ):
        study.configs("nope")
    with pytest.raises(StudyError, match=r"overrides: unknown parameter 'epoch'"):
        Study.from_dict(GRID).configs(overrides={"epoch": 1})
    with pytest.raises(StudyError, match=r"unknown study 'missing'"):
        Study.load("missing")
    with pytest.raises(StudyError, match=r"grid2\.yml: unknown key 'axis'"):
        Study.load(write_study(tmp_path, {"axis": {}}, name="grid2"))
    with pytest.raises(StudyError, match=r"base\.seed: a list of values only expands inside an axis"):
        Study.from_dict({"base": {"seed": [0, 1]}})


# -- running ------------------------------------------------------------------------------------------
def test_tiny_study_trains_once_and_tabulates(tiny_base, tmp_path, calls):
    study = Study.from_dict(
        {
            "name": "tiny",
            "base": tiny_base,
            "axes": {"run": [{"mode": "lora"}, {"mode": "dp-lora", "epsilon": 10}]},
        }
    )
    store = ResultStore(tmp_path / "results")
    assert plan(study, store=store)["status"].tolist() == ["to train", "to train"]
    seen: list[str] = []
    table = run_study(study, store=store, progress=False, on_result=lambda r: seen.append(r.config_hash))
    assert len(calls["train"]) == 2 and len(calls["splits"]) == 1
    assert seen == table["config_hash"].tolist() == [c.config_hash() for c in study.configs()]
    assert table["run"].tolist() == ["mode=lora", "mode=dp-lora epsilon=10.0"]

    expected = ["config_hash", "corpus", "label_set", "model", "num_layers", "max_length", "mode"]
    expected += [
        "target_epsilon",
        "epsilon_rdp",
        "epsilon_prv",
        "delta",
        "noise_multiplier",
        "seed",
        "n_train",
    ]
    expected += [f"{m}_f1{s}" for m in ("weighted", "micro", "macro") for s in ("", "_lo", "_hi")]
    expected += ["macro_auroc", "train_seconds", "peak_memory_mb", "epochs", "batch_size"]
    assert set(expected) <= set(table.columns)
    labels = [c for c in table.columns if c.startswith("f1:")]
    assert len(labels) == 14 and "f1:No Finding" in labels
    lora, dp = table.iloc[0], table.iloc[1]
    assert all(
        math.isnan(lora[k]) for k in ("target_epsilon", "epsilon_rdp", "epsilon_prv", "noise_multiplier")
    )
    assert (
        dp["target_epsilon"] == 10.0 and 0 < dp["epsilon_rdp"] <= 10.0 + 1e-6 and dp["noise_multiplier"] > 0
    )
    assert (table["weighted_f1_lo"] <= table["weighted_f1"]).all()
    assert (table["weighted_f1"] <= table["weighted_f1_hi"]).all()
    assert table["epochs"].tolist() == [1, 1] and table["batch_size"].tolist() == [16, 16]
    assert table["n_train"].tolist() == [96, 96]

    again = run_study(study, store=store, progress=False)  # everything stored: nothing trains or splits
    assert len(calls["train"]) == 2 and len(calls["splits"]) == 1
    pd.testing.assert_frame_equal(again, table)
    assert plan(study, store=store)["status"].tolist() == ["stored", "stored"]

    long = per_label_long(table)
    assert len(long) == 2 * 14 and {"label", "f1", "mode", "config_hash"} <= set(long.columns)
    csv = pd.read_csv(save_table(table, tmp_path / "out" / "tiny.csv"))
    assert list(csv.columns) == list(table.columns)
    np.testing.assert_allclose(csv["f1:No Finding"], table["f1:No Finding"])


def test_splits_are_prepared_once_per_data_and_teacher(tiny_base, tmp_path, calls):
    study = Study.from_dict(
        {
            "base": tiny_base,
            "axes": {
                "data": [{"data_seed": 0}, {"data_seed": 1}],
                "run": [{"mode": "lora"}, {"mode": "full"}],
            },
        }
    )
    table = run_study(study, store=tmp_path / "results", progress=False)
    assert len(table) == 4 and len(calls["train"]) == 4
    assert calls["splits"] == [(0, "chexpert"), (1, "chexpert")]
    assert "data_seed" in table.columns  # a varying config field the fixed columns do not show
    assert table["run"].tolist() == [
        "data_seed=0 mode=lora",
        "data_seed=0 mode=full",
        "data_seed=1 mode=lora",
        "data_seed=1 mode=full",
    ]


def test_a_killed_study_resumes(tiny_base, tmp_path, monkeypatch):
    study = Study.from_dict({"base": tiny_base, "axes": {"run": [{"mode": "lora"}, {"mode": "full"}]}})
    lora, full = study.configs()
    store = ResultStore(tmp_path / "results")
    checkpoint = store.root / "checkpoints" / full.config_hash()
    train = dpcore.pipeline.runs.train
    attempts: list[tuple[str, bool]] = []

    def killed_once(cfg, splits, **kwargs):
        attempts.append((cfg.config_hash(), (Path(kwargs["checkpoint_dir"]) / "state.pt").is_file()))
        if cfg == full and len(attempts) == 2:  # the second run dies after its first step
            return train(cfg, splits, stop_after_steps=1, **kwargs)
        return train(cfg, splits, **kwargs)

    monkeypatch.setattr(dpcore.pipeline.runs, "train", killed_once)
    with pytest.raises(TrainingInterrupted):
        run_study(study, store=store, progress=False)
    assert store.get(lora) is not None and store.get(full) is None
    assert (checkpoint / "state.pt").is_file()

    table = run_study(study, store=store, progress=False)
    # The first run is not trained again; the second resumes from its checkpoint, which then goes.
    assert attempts == [(lora.config_hash(), False), (full.config_hash(), False), (full.config_hash(), True)]
    assert store.get(full) is not None and not checkpoint.parent.exists()
    assert table["mode"].tolist() == ["lora", "full"]
    assert store.get(full).epochs[-1].steps == 6  # all of the epoch's steps: 96 reports / 16


def test_aggregate_seeds_t_interval_or_the_bootstrap():
    from scipy import stats

    rows = [
        {"mode": "lora", "seed": s, "weighted_f1": v, "micro_f1": v, "macro_f1": v}
        for s, v in enumerate([0.70, 0.74, 0.72])
    ]
    rows.append({"mode": "full", "seed": 0, "weighted_f1": 0.8, "micro_f1": 0.8, "macro_f1": 0.8})
    table = pd.DataFrame(rows)
    for m in ("weighted", "micro", "macro"):
        table[f"{m}_f1_lo"], table[f"{m}_f1_hi"] = table[f"{m}_f1"] - 0.05, table[f"{m}_f1"] + 0.05
    agg = aggregate_seeds(table, by=["mode"])
    assert agg["mode"].tolist() == ["lora", "full"] and agg["n_seeds"].tolist() == [3, 1]
    half = stats.t.ppf(0.975, 2) * np.std([0.70, 0.74, 0.72], ddof=1) / np.sqrt(3)
    assert agg.loc[0, "weighted_f1"] == pytest.approx(0.72)
    assert agg.loc[0, "weighted_f1_hi"] - 0.72 == pytest.approx(half)
    assert agg.loc[1, ["weighted_f1_lo", "weighted_f1_hi"]].tolist() == pytest.approx([0.75, 0.85])
    assert agg["interval"].tolist() == ["t over seeds", "bootstrap"]


# -- command line -------------------------------------------------------------------------------------
def test_cli_dry_run_show_and_run(tiny_base, tmp_path, capsys, calls):
    path = write_study(tmp_path, {"base": tiny_base, "axes": {"run": [{"mode": "lora"}, {"mode": "full"}]}})
    results = str(tmp_path / "results")
    dpcore.pipeline.run(Study.load(path).configs()[0], store=ResultStore(results), progress=False)
    assert len(calls["train"]) == 1

    assert main(["study", "run", str(path), "--results", results, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 to train, 1 stored" in out
    assert "stored" in out and "to train" in out and "mode=full" in out
    assert len(calls["train"]) == 1  # a dry run trains nothing

    assert main(["study", "show", str(path), "--set", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "full" in out and "lora" in out

    csv = tmp_path / "table.csv"
    assert main(["study", "run", str(path), "--results", results, "--no-progress", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert len(calls["train"]) == 2 and "weighted_f1" in out and "mode=full" in out
    assert len(pd.read_csv(csv)) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--set", "epoch=1"], "unknown parameter 'epoch'"),
        (["--set", "epochs"], "--set expects key=value"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys, argv, message):
    path = write_study(tmp_path, GRID)
    assert main(["study", "run", str(path), "--dry-run", "--results", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_unknown_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "show", "nothing-here"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown study 'nothing-here'")
