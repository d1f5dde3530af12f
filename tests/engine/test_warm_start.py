"""The public warm start: trained once on a disjoint public sample, loaded before the private run."""

from __future__ import annotations

import pytest
import torch

from dpcore import pipeline
from dpcore.pipeline import warm_start as ws
from dpcore.training import InitialWeights
from dpcore.training import train as train_engine


def test_a_warm_started_run_starts_from_the_public_weights(tiny_config, tiny_splits, monkeypatch):
    cfg = tiny_config.replace(mode="dp-lora", epsilon=10.0, warm_start="synthetic", warm_start_reports=100)
    public = ws.public_config(cfg)
    assert public.data.data_seed != cfg.data.data_seed and not public.is_private
    ws._CACHE.clear()
    start = ws.warm_start(cfg)
    loaded = {}
    real_load = InitialWeights.load_into

    def spy(self, model):
        real_load(self, model)
        loaded.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    monkeypatch.setattr(InitialWeights, "load_into", spy)
    result = pipeline.train(cfg, tiny_splits, progress=False)
    assert loaded.keys() == start.weights.keys()
    assert all(torch.equal(loaded[n], start.weights[n]) for n in loaded)
    warm = result.extra["warm_start"]
    assert warm["reports"] == 100 and warm["config_hash"] == public.config_hash()
    assert 0.0 <= warm["test_vs_reference"]["f1"]["weighted"] <= 1.0
    assert result.privacy.epsilon_rdp <= 10.0  # public training spends nothing


def test_the_public_corpus_follows_the_label_set(tiny_config):
    ct = tiny_config.replace(corpus="synthetic-ct", label_set="ctrate", warm_start="synthetic")
    assert ws.public_config(ct).data.corpus == "synthetic-ct"
    assert ws.public_config(tiny_config.replace(warm_start="synthetic")).data.corpus == "synthetic-cxr"


def test_the_engine_refuses_a_warm_start_without_its_weights(tiny_config, tiny_splits):
    # The engine never trains the public run itself: the orchestration does, and hands the weights over.
    cfg = tiny_config.replace(mode="dp-lora", epsilon=10.0, warm_start="synthetic", warm_start_reports=100)
    with pytest.raises(ValueError, match="dpcore.pipeline.train"):
        train_engine(cfg, tiny_splits, progress=False)
    with pytest.raises(ValueError, match="names no warm_start"):
        train_engine(tiny_config, tiny_splits, progress=False, initial=InitialWeights({}))
