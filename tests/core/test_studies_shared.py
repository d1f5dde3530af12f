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


@pytest.mark.parametrize("profile", ["quick", "smoke"])
def test_the_deepest_model_size_runs_are_grid_runs(profile):
    grid = _hashes("grid", profile, corpus="synthetic-cxr")
    deepest = _hashes("model_size", profile, num_layers=None)
    assert deepest and deepest <= grid


def test_the_ct_length_run_at_the_grids_length_is_the_grids_run():
    grid = _hashes("grid", "quick", corpus="synthetic-ct", mode="lora", trainable_layers=1)
    assert len(grid) == 1 and grid <= _hashes("ct_length", "quick")


@pytest.mark.parametrize("name", ["grid", "model_size", "ct_length"])
@pytest.mark.parametrize("profile", ["quick", "paper", "smoke"])
def test_every_profile_of_every_study_expands_to_valid_runs(name, profile):
    configs = Study.load(STUDIES / f"{name}.yml").configs(profile)
    assert configs
    private = [c for c in configs if c.is_private]
    assert all(c.privacy.poisson_sampling for c in private)
