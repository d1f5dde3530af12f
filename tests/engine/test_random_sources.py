"""The sampler's and the noise's generators: where each lives, and that a run puts the noise on its model's
device (Opacus draws noise on the parameters' device with the generator it is given)."""

from __future__ import annotations

import torch

from dpcore.training import engine, train
from dpcore.training import run as run_module


def test_the_noise_generator_lives_on_the_device_asked_for(monkeypatch):
    made: list[torch.device] = []

    class Recording:
        def __init__(self, device: torch.device | str = "cpu") -> None:
            made.append(torch.device(device))

        def manual_seed(self, seed: int) -> Recording:
            return self

    monkeypatch.setattr(torch, "Generator", Recording)
    engine.random_sources(seed=0, rank=0, secure=False, noise_device=torch.device("cuda", 1))
    assert made == [torch.device("cpu"), torch.device("cuda", 1)]  # sampler on the CPU, noise on the GPU


def test_generators_are_real_and_seeded_on_cpu():
    a = engine.random_sources(seed=3, rank=0, secure=False, noise_device="cpu")
    b = engine.random_sources(seed=3, rank=0, secure=False, noise_device="cpu")
    assert {g.device.type for g in a.values()} == {"cpu"}
    assert torch.equal(torch.randn(4, generator=a["noise"]), torch.randn(4, generator=b["noise"]))
    assert not torch.equal(torch.randn(4, generator=a["sampler"]), torch.randn(4, generator=a["noise"]))


def test_a_dp_run_draws_noise_on_its_models_device(tiny_config, tiny_splits, monkeypatch):
    seen: dict[str, object] = {}
    real = run_module.random_sources

    def spy(**kwargs):
        seen.update(kwargs)
        generators = real(**kwargs)
        seen["noise_generator_device"] = generators["noise"].device
        return generators

    monkeypatch.setattr(run_module, "random_sources", spy)
    result = train(
        tiny_config.replace(mode="dp-lora", epsilon=10.0), tiny_splits, progress=False, keep_model=True
    )
    param_device = next(p for p in result.model.parameters() if p.requires_grad).device
    assert torch.device(seen["noise_device"]) == param_device == seen["noise_generator_device"]
