"""What leaves the machine: every field of a run's result JSON and of a saved model's manifest is covered by
epsilon or listed outside it with what it reveals (the registry :mod:`dpcore.training.released`)."""

from __future__ import annotations

import copy
import json

import pytest

from dpcore.pipeline import train
from dpcore.release.saved_model import MANIFEST, save_classifier
from dpcore.training.released import MANIFEST as MANIFEST_FIELDS
from dpcore.training.released import OUTSIDE, RESULT, leaf_paths, lookup, unlisted

# The quantities a first review found released but unlisted: each must be outside epsilon, with a reason.
TIMING_AND_ACCOUNTING = (
    "timings",
    "epochs.seconds",
    "epochs.train_seconds",
    "peak_memory_mb",
    "privacy.sample_rate",
    "privacy.steps",
    "privacy.delta",
)


@pytest.fixture(scope="module")
def released(tiny_config, tiny_splits, tmp_path_factory) -> dict[str, dict]:
    """A DP run with every optional field (patient unit with a cap, tuned thresholds, membership losses, a
    public warm start) and a non-private run: their result JSON and their saved manifests."""
    dp_cfg = tiny_config.replace(
        mode="dp-lora",
        epsilon=4.0,
        privacy_unit="patient",
        max_reports_per_patient=2,
        batch_size=8,
        threshold_policy="validation",
        membership_sample=5,
        warm_start="synthetic",
        warm_start_reports=40,
    )
    root = tmp_path_factory.mktemp("released")
    out = {}
    for name, cfg in (("dp", dp_cfg), ("plain", tiny_config)):
        result = train(cfg, tiny_splits, progress=False, keep_model=True, release=True)
        out[f"{name}_result"] = json.loads(json.dumps(result.to_dict()))
        folder = save_classifier(result, root / name)
        out[f"{name}_manifest"] = json.loads((folder / MANIFEST).read_text())
    return out


@pytest.mark.parametrize("name", ["dp_result", "plain_result", "dp_manifest", "plain_manifest"])
def test_every_released_field_is_covered_or_listed_outside(released, name):
    document = released[name]
    registry = MANIFEST_FIELDS if name.endswith("manifest") else RESULT
    assert list(leaf_paths(document))  # the walk sees the fields
    assert unlisted(document, registry=registry) == []


def test_a_field_in_neither_list_fails_the_walk(released):
    result, manifest = copy.deepcopy(released["dp_result"]), copy.deepcopy(released["dp_manifest"])
    result["extra"]["sampled_batch_sizes"] = [3, 5, 4]
    result["epochs"][0]["grad_norm"] = 0.7
    manifest["train_patients"] = 12
    assert unlisted(result, registry=RESULT) == ["epochs.grad_norm", "extra.sampled_batch_sizes"]
    assert unlisted(manifest, registry=MANIFEST_FIELDS) == ["train_patients"]


def test_timings_memory_and_the_accounting_are_outside_with_what_they_reveal(released):
    result = released["dp_result"]
    outside = result["outside_epsilon"]
    for key in TIMING_AND_ACCOUNTING:
        assert lookup(key, registry=RESULT)[0] == OUTSIDE, key
        assert key in outside and outside[key], key
    assert "Poisson draw" in outside["timings"] and "N" in outside["privacy.sample_rate"]
    assert "1 / (10 N)" in outside["privacy.delta"]
    # The result lists exactly the outside fields it holds (the membership losses and warm start too).
    assert {"extra.membership", "extra.warm_start", "extra.thresholds", "privacy.units"} <= set(outside)
    manifest = released["dp_manifest"]["outside_epsilon"]
    for key in ("privacy.sample_rate", "privacy.steps", "privacy.delta", "data", "metrics", "thresholds"):
        assert key in manifest, key
    assert "thresholds" not in released["plain_manifest"]["outside_epsilon"]  # fixed: the configuration's
    assert "model" in released["plain_result"]["outside_epsilon"]


def test_the_card_lists_what_the_folder_releases_outside_epsilon(released, tmp_path):
    from dpcore.release.model_card import model_card

    card = model_card(released["dp_manifest"])
    section = card.split("## What epsilon covers")[1].split("\n## ")[0]
    for key in ("privacy.sample_rate", "privacy.steps", "privacy.delta", "thresholds", "metrics"):
        assert f"`{key}`" in section, key
