"""bfloat16 autocast under DP: the mechanism stays float32 (clipping to C, noise σC/B), the probe decides,
and a bfloat16 run scores within the float32 run's interval."""

from __future__ import annotations

import pytest
import torch

from dpcore.config import RunConfig
from dpcore.models import build_model, load_tokenizer, set_dropout
from dpcore.training import make_private, pad_collate, seed_everything, train, train_step
from dpcore.training.precision import autocast, probe, resolve_precision

TEXTS = [
    "no acute cardiopulmonary process",
    "small left pleural effusion with adjacent atelectasis",
    "heart size is mildly enlarged. no pneumothorax.",
    "there is a right lower lobe consolidation concerning for pneumonia and a small effusion",
]


@pytest.fixture(scope="module")
def items(tiny_config):
    tok = load_tokenizer(tiny_config.model.model)
    g = torch.Generator().manual_seed(1)
    return [(torch.tensor(i), (torch.rand(14, generator=g) < 0.3).float()) for i in tok(TEXTS)["input_ids"]]


def _step(cfg, batch, *, sigma: float, c: float, precision: str, seed: int = 0) -> torch.Tensor:
    """The flat update of one DP step (SGD, lr 1) over ``batch`` as one chunk, forward under ``precision``."""
    seed_everything(0)
    model = build_model(cfg.model, num_labels=14, mode="dp-lora")
    set_dropout(model, 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    before = torch.cat([p.detach().flatten() for p in params])
    private = make_private(
        model,
        torch.optim.SGD(params, lr=1.0),
        noise_multiplier=sigma,
        max_grad_norm=c,
        expected_batch_size=len(batch),
        grad_sample_mode="hooks",
    )
    torch.manual_seed(seed)
    chunk = pad_collate(0)(batch)
    train_step(
        private.module,
        private.optimizer,
        [chunk],
        logical_size=len(batch),
        private=private,
        precision=precision,
    )
    return before - torch.cat([p.detach().flatten() for p in params])


def test_each_clipped_gradient_is_at_most_c_under_bfloat16(tiny_config, items):
    c = 1e-3  # far below every raw norm: every report is clipped to exactly C
    for item in items:
        update = _step(tiny_config, [item], sigma=0.0, c=c, precision="bfloat16")
        assert float(update.norm()) <= c * (1 + 1e-5)
        assert float(update.norm()) == pytest.approx(c, rel=1e-3)


def test_noise_std_is_sigma_c_over_b_under_bfloat16(tiny_config, items):
    sigma, c, b = 2.0, 0.5, len(items)
    clean = _step(tiny_config, items, sigma=0.0, c=c, precision="bfloat16")
    noisy = _step(tiny_config, items, sigma=sigma, c=c, precision="bfloat16")
    noise = noisy - clean
    assert noise.numel() > 1000
    assert float(noise.std()) == pytest.approx(sigma * c / b, rel=0.15)


def test_bfloat16_and_float32_updates_agree_to_bfloat16_rounding(tiny_config, items):
    a = _step(tiny_config, items, sigma=0.0, c=0.05, precision="float32")
    b = _step(tiny_config, items, sigma=0.0, c=0.05, precision="bfloat16")
    assert float((a - b).norm() / a.norm()) < 0.05


def test_ghost_clipping_refuses_bfloat16():
    with pytest.raises(ValueError, match="bfloat16.*hooks"):
        RunConfig.from_flat({"mode": "dp-full", "epsilon": 1.0, "precision": "bfloat16"})
    RunConfig.from_flat({"mode": "dp-lora", "epsilon": 1.0, "precision": "bfloat16"})  # hooks: allowed


def test_the_probe_measures_and_explains_its_choice():
    found = probe("cpu")
    assert found.chosen in ("float32", "bfloat16") and found.float32_seconds > 0
    assert found.chosen == "float32" or (found.speedup >= 1.3 and found.relative_error <= 1e-2)
    assert resolve_precision("auto", torch.device("cpu")) == found.chosen
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float16", torch.device("cpu"))
    with autocast("bfloat16", "cpu"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16


def test_a_bfloat16_run_scores_within_the_float32_runs_interval(tiny_config, tiny_splits):
    base = tiny_config.replace(mode="lora", epochs=2, dropout=0.0)
    f32 = train(base.replace(precision="float32"), tiny_splits, progress=False)
    b16 = train(base.replace(precision="bfloat16"), tiny_splits, progress=False)
    assert (f32.extra["precision"], b16.extra["precision"]) == ("float32", "bfloat16")
    lo, hi = f32.metrics["test_vs_reference"]["f1_ci"]["weighted"]
    assert lo <= b16.weighted_f1 <= hi
