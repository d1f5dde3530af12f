"""The book's studies share runs: where two studies describe the same run, it must be the same configuration
(one hash), so the results store trains it once. A change to one study's base that forgets the other fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpcore.study import Study

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _hashes(name: str, profile: str, **where) -> set[str]:
    configs = Study.load(STUDIES / f"{name}.yml").configs(profile)
    return {c.config_hash() for c in configs if all(c.to_flat()[k] == v for k, v in where.items())}


def test_each_model_size_trains_the_same_fraction_of_its_layers():
    """The sizes differ in what trains, as the paper's models do, not only in the frozen depth below."""
    configs = Study.load(STUDIES / "model_size.yml").configs("quick")
    depth = {c.model.num_layers or 6 for c in configs}  # None: the whole MiniLM-L6
    fractions = {
        (c.model.num_layers or 6, (c.model.trainable_layers or 0) / (c.model.num_layers or 6))
        for c in configs
    }
    assert len(depth) == 3 and len({f for _, f in fractions}) == 1 and all(f > 0 for _, f in fractions)


def test_the_ct_length_run_at_the_grids_length_is_the_grids_run():
    grid = _hashes("grid", "quick", corpus="synthetic-ct", mode="lora", trainable_layers=1, seed=0)
    assert len(grid) == 1 and grid <= _hashes("ct_length", "quick")


def test_the_data_size_runs_at_the_grids_size_are_grid_runs():
    grid = _hashes("grid", "quick", corpus="synthetic-cxr", seed=0, warm_start=None, privacy_unit="report")
    shared = _hashes("data_size", "quick", n_reports=2000)
    assert len(shared) == 3 and shared <= grid


def test_the_data_size_scale_profile_holds_the_quick_profile_and_larger_sizes():
    quick = Study.load(STUDIES / "data_size.yml").configs("quick")
    scale = Study.load(STUDIES / "data_size.yml").configs("scale")
    assert {c.config_hash() for c in quick} <= {c.config_hash() for c in scale}
    sizes = sorted({c.data.n_reports for c in scale})
    assert len(sizes) >= 4 and sizes[-1] >= 10 * sizes[0]  # at least four sizes spanning 10x


@pytest.mark.parametrize("name", ["grid", "model_size", "ct_length", "data_size"])
@pytest.mark.parametrize("profile", ["quick", "paper", "smoke"])
def test_every_profile_of_every_study_expands_to_valid_runs(name, profile):
    configs = Study.load(STUDIES / f"{name}.yml").configs(profile)
    assert configs
    private = [c for c in configs if c.is_private]
    assert all(c.privacy.poisson_sampling for c in private)


def test_the_quick_profiles_non_private_epochs_are_the_validation_choice():
    """LoRA and full fine-tuning train for the epochs chosen on validation (book/archive/baseline_schedule.jsonl)
    in the grid and in every quick study with a non-private row, so that no gap is measured against a baseline
    stopped early."""
    import json

    import pandas as pd

    from dpcore.study.selection import chosen_epochs

    archive = STUDIES.parent / "book" / "archive" / "baseline_schedule.jsonl"
    runs = pd.DataFrame([json.loads(line) for line in archive.read_text().splitlines()])
    choice = chosen_epochs(runs)
    assert set(choice) == {"lora", "full"}
    for name in ("grid", "data_size", "model_size", "ct_length"):
        for c in Study.load(STUDIES / f"{name}.yml").configs("quick"):
            if c.train.mode in choice and c.model.trainable_layers != 0:
                assert c.train.resolved().epochs == choice[c.train.mode], (name, c.to_flat())


def test_the_data_size_archive_holds_every_larger_scale_run_and_nothing_else():
    """The book reads the scale profile's larger sizes from book/archive/data_size/. A configuration change
    that orphans an archived run (it no longer matches any scale run) or leaves a scale run unarchived fails
    here, not silently in the chapter's figure."""
    from dpcore.pipeline import archived_runs

    study = Study.load(STUDIES / "data_size.yml")
    quick = {c.config_hash() for c in study.configs("quick")}
    larger = [c for c in study.configs("scale") if c.config_hash() not in quick]
    folder = STUDIES.parent / "book" / "archive" / "data_size"
    found = archived_runs(folder, larger)
    files = [p for p in folder.glob("*.json") if p.name != "provenance.json"]
    assert set(found) == {c.config_hash() for c in larger} and len(files) == len(larger)
