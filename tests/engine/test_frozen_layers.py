"""Training only the top layers on cached frozen-layer features: two computations that must agree.

The split model (frozen lower layers run once, their output fed to the top layers) must give the logits,
the per-sample gradients and the trained weights that the whole model gives when only its top layers train.
"""

from __future__ import annotations

import pytest
import torch

from dpcore.models import build_model, load_tokenizer
from dpcore.training import make_private, pad_collate, per_example_loss, seed_everything, train

TEXTS = [
    "No focal consolidation, effusion or pneumothorax.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Heart size is mildly enlarged.",
    "Right lower lobe opacity concerning for pneumonia.",
]


def _model(cfg, mode, trainable_layers):
    seed_everything(0)
    model = build_model(
        cfg.model.__class__(**{**cfg.model.__dict__, "trainable_layers": trainable_layers}),
        num_labels=14,
        mode=mode,
    )
    for module in model.modules():  # dropout would make the two computations differ
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(scope="module")
def batch(tiny_config):
    tok = load_tokenizer(tiny_config.model.model)
    items = [(torch.tensor(ids), torch.zeros(14)) for ids in tok(TEXTS)["input_ids"]]
    for k, (_, y) in enumerate(items):
        y[k] = 1.0
    return pad_collate(tok.pad_token_id)(items)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_the_split_model_gives_the_whole_models_logits(tiny_config, batch, mode):
    ids, mask, _ = batch
    model = _model(tiny_config, mode, trainable_layers=1)
    assert model.first_trainable == 1
    with torch.no_grad():
        for p in model.parameters():  # LoRA's B starts at zero: move every weight so adapters count
            p.add_(0.01 * torch.randn_like(p))
    whole = model(ids, mask)
    split = model(model.frozen_features(ids, mask), mask)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "trainable"), [("dp-lora", {"layer.1.", "head."}), ("dp-full", {"layer.1.", "head."})]
)
def test_only_the_top_layers_train_and_their_per_sample_gradients_match(tiny_config, batch, mode, trainable):
    ids, mask, targets = batch
    whole = _model(tiny_config, mode, trainable_layers=1)
    names = [n for n, p in whole.named_parameters() if p.requires_grad]
    assert names and all(any(t in n for t in trainable) for n in names), names

    def per_sample(model, inputs):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        private = make_private(
            model,
            opt,
            noise_multiplier=0.0,
            max_grad_norm=1e6,
            expected_batch_size=4,
            grad_sample_mode="hooks",
        )
        per_example_loss(private.module(inputs, mask), targets).mean().backward()
        return {n: p.grad_sample.clone() for n, p in model.named_parameters() if p.requires_grad}

    split = _model(tiny_config, mode, trainable_layers=1)
    a = per_sample(whole, ids)
    b = per_sample(split, split.frozen_features(ids, mask))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_head_only_trains_the_head_alone(tiny_config, tiny_splits):
    cfg = tiny_config.replace(trainable_layers=0, mode="dp-lora", epsilon=10.0)
    result = train(cfg, tiny_splits, progress=False, keep_model=True)
    assert [n for n, p in result.model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert result.parameters["trainable"] == result.model.head.weight.numel() + 14
    assert result.timings["feature_seconds"] >= 0 and result.privacy.epsilon_rdp <= 10.0


def test_runs_that_share_model_and_reports_compute_the_frozen_features_once(tiny_config, tiny_splits):
    from dpcore import training

    training._FEATURE_CACHE.clear()
    lora = train(tiny_config.replace(trainable_layers=1, mode="lora"), tiny_splits, progress=False)
    assert len(training._FEATURE_CACHE) == 3  # train, validation, test
    dp = train(
        tiny_config.replace(trainable_layers=1, mode="dp-lora", epsilon=10.0), tiny_splits, progress=False
    )
    assert len(training._FEATURE_CACHE) == 3
    whole = train(tiny_config, tiny_splits, progress=False)
    assert lora.parameters["trainable"] == dp.parameters["trainable"] < whole.parameters["trainable"]
    assert whole.timings["feature_seconds"] == 0.0
    assert {depth for (_, _, depth) in training._FEATURE_CACHE} == {1}


def test_deeper_features_carried_from_shallower_ones_equal_features_from_scratch(tiny_config, tiny_splits):
    """The head alone (depth 2 of the tiny 2-layer model) after the top layer (depth 1): depth 2 is carried
    from the cached depth 1, and equals depth 2 computed from token ids."""
    from dpcore import training

    training._FEATURE_CACHE.clear()
    train(tiny_config.replace(trainable_layers=1), tiny_splits, progress=False)
    train(tiny_config.replace(trainable_layers=0), tiny_splits, progress=False)
    carried = {h: v for (_, h, d), v in training._FEATURE_CACHE.items() if d == 2}
    training._FEATURE_CACHE.clear()
    train(tiny_config.replace(trainable_layers=0), tiny_splits, progress=False)
    fresh = {h: v for (_, h, d), v in training._FEATURE_CACHE.items() if d == 2}
    assert carried.keys() == fresh.keys() and len(fresh) == 3
    for h in fresh:
        for a, b in zip(carried[h], fresh[h], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_a_trains_b_alone_under_dp_and_keeps_a_at_its_initialisation(tiny_config, tiny_splits):
    """``lora_freeze_a``: every adapter's A stays where it started; B and the head train under DP-SGD."""
    cfg = tiny_config.replace(mode="dp-lora", epsilon=10.0, lora_freeze_a=True, epochs=2, batch_size=32)
    seed_everything(0)
    start = {
        n: p.detach().clone()
        for n, p in build_model(cfg.model, num_labels=14, mode="dp-lora").named_parameters()
    }
    result = train(cfg, tiny_splits, keep_model=True, progress=False)
    trained = dict(result.model.named_parameters())
    a = [n for n in trained if ".lora_A." in n]
    b = [n for n in trained if ".lora_B." in n]
    assert a and b and not any(trained[n].requires_grad for n in a)
    assert all(torch.equal(trained[n].detach(), start[n]) for n in a)
    assert any(not torch.equal(trained[n].detach(), start[n]) for n in b)
    both = build_model(
        cfg.model.__class__(**{**cfg.model.__dict__, "lora_freeze_a": False}), num_labels=14, mode="dp-lora"
    )
    half = sum(p.numel() for n, p in both.named_parameters() if ".lora_A." in n)
    assert (
        result.parameters["trainable"] == sum(p.numel() for p in both.parameters() if p.requires_grad) - half
    )
