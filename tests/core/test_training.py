"""Training-engine tests in Opacus's own style: compare two paths, check what must and must not change."""

from __future__ import annotations

import math

import pytest
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader

from dpcore.config import RunConfig
from dpcore.models import build_model
from dpcore.pipeline import run
from dpcore.pipeline.results import ResultStore
from dpcore.training import (
    IGNORE,
    RunResult,
    encode,
    pad_collate,
    per_example_loss,
    seed_everything,
    targets_from_labels,
    train,
)


def test_per_example_loss_is_a_vector_and_ignores_masked_labels():
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1.0, 0.0, IGNORE]] * 4)
    loss = per_example_loss(logits, targets)
    assert loss.shape == (4,)
    # The masked third label cannot change the loss.
    assert torch.allclose(loss, per_example_loss(logits.index_fill(1, torch.tensor([2]), 9.0), targets))
    full = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, :2], targets[:, :2], reduction="none"
    )
    assert torch.allclose(loss, full.mean(1))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("u-ones", [1.0, 1.0, 0.0]), ("u-zeros", [1.0, 0.0, 0.0]), ("ignore", [1.0, IGNORE, 0.0])],
)
def test_uncertainty_policies_become_targets(policy, expected):
    assert targets_from_labels([[1, -1, None]], policy=policy).tolist() == [expected]


def test_padding_does_not_change_the_prediction(tiny_config):
    from dpcore.models import load_tokenizer

    seed_everything(0)
    model = build_model(tiny_config.model, num_labels=14, mode="lora").eval()
    tok = load_tokenizer(tiny_config.model.model)
    short = tok(["no acute cardiopulmonary process"])["input_ids"][0]
    long = tok(["a much longer report that forces padding of the first one here"])["input_ids"][0]
    collate = pad_collate(tok.pad_token_id)
    t = torch.zeros(14)
    alone = model(*collate([(torch.tensor(short), t)])[:2])
    padded = model(*collate([(torch.tensor(short), t), (torch.tensor(long), t)])[:2])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_private_step_moves_lora_and_head_and_nothing_else(tiny_config, tiny_splits):
    """The Opacus + PEFT pitfall: adapters that never train. One DP step must move them."""
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, epochs=1)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, num_labels=14, mode="dp-lora")
    before = _params(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    assert all("lora_" in n or n.startswith("head.") for n in trainable)

    from dpcore.models import load_tokenizer

    tok = load_tokenizer(cfg.model.model)
    data = encode(
        tiny_splits["train"],
        tokenizer=tok,
        text_column="findings",
        label_column="teacher_labels",
        policy="u-ones",
        max_length=48,
    )
    loader = DataLoader(data, batch_size=16, collate_fn=pad_collate(tok.pad_token_id))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model, optimizer, loader = PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0
    )
    ids, mask, targets = next(iter(loader))
    per_example_loss(model(ids, mask), targets).mean().backward()
    optimizer.step()
    after = _params(model._module)
    for name, value in before.items():
        moved = not torch.equal(value, after[name])
        assert moved == (name in trainable), f"{name}: moved={moved}, trainable={name in trainable}"


def test_dp_switched_off_equals_plain_training(tiny_config, tiny_splits):
    """No noise, a clipping bound no gradient reaches, fixed batches: DP-SGD is plain SGD."""
    # The two modes' tuned learning rates differ; the comparison needs the same ones. float32: under bfloat16
    # the two paths round in different places (the mechanism's float32 arithmetic is tested apart).
    same = {"lora_dropout": 0.0, "learning_rate": 5e-3, "head_learning_rate": 3e-2, "precision": "float32"}
    plain = train(tiny_config.replace(mode="lora", **same), tiny_splits, progress=False, keep_model=True)
    dp = train(
        tiny_config.replace(
            mode="dp-lora", noise_multiplier=0.0, max_grad_norm=1e6, poisson_sampling=False, **same
        ),
        tiny_splits,
        progress=False,
        keep_model=True,
    )
    a, b = _params(plain.model), _params(dp.model)
    assert a.keys() == b.keys()
    # Training really happened (LoRA B starts at zero), so equality below is not vacuous.
    assert any("lora_B" in n and a[n].abs().sum() > 0 for n in a)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    # Without Poisson sampling no epsilon may be reported.
    assert dp.privacy.epsilon_rdp is None and dp.privacy.epsilon_prv is None


def test_private_run_reports_both_accountants_within_budget(tiny_config, tiny_splits):
    result = train(tiny_config.replace(mode="dp-lora", epsilon=2.0, epochs=2), tiny_splits, progress=False)
    p = result.privacy
    assert p.poisson_sampling
    assert p.epsilon_rdp <= 2.0  # the calibrating accountant (rdp) meets the target
    assert 0 < p.epsilon_prv <= p.epsilon_rdp
    assert p.delta < 1 / result.data["train"]
    assert p.steps == 2 * math.ceil(result.data["train"] / 16)
    # Epsilon grows epoch by epoch and is reported for each.
    eps = [e.epsilon_rdp for e in result.epochs]
    assert len(eps) == 2 and eps[0] < eps[1] == p.epsilon_rdp
    assert all(math.isfinite(e.val_loss) for e in result.epochs)


def test_full_fine_tuning_trains_every_weight(tiny_config, tiny_splits):
    result = train(tiny_config.replace(mode="full"), tiny_splits, progress=False, keep_model=True)
    assert result.parameters["trainable"] == result.parameters["total"]
    assert result.privacy is None


def test_result_round_trips_through_json(tiny_config, tiny_splits, tmp_path):
    result = train(tiny_config.replace(mode="dp-lora", noise_multiplier=1.0), tiny_splits, progress=False)
    path = result.save(tmp_path / "r.json")
    again = RunResult.load(path)
    assert again.to_dict() == result.to_dict()
    assert set(again.metrics) == {"test_vs_reference", "test_vs_teacher", "validation_vs_teacher"}
    assert set(again.metrics["test_vs_reference"]["f1"]) == {"weighted", "micro", "macro", "per_label"}


def test_store_trains_a_configuration_once(tiny_config, tiny_splits, tmp_path):
    store = ResultStore(tmp_path)
    calls = []

    def counted(cfg: RunConfig) -> RunResult:
        calls.append(cfg)
        return train(cfg, tiny_splits, progress=False)

    first = store.get_or_run(tiny_config, counted)
    second = store.get_or_run(tiny_config, counted)
    assert len(calls) == 1
    assert second.to_dict() == first.to_dict()
    assert run(tiny_config, store=store, splits=tiny_splits).config_hash == first.config_hash
    assert len(calls) == 1


def test_a_dp_batch_larger_than_the_training_set_is_refused(tiny_config, tiny_splits):
    # The DP default batch (1,024) is larger than the tiny training split: a sample rate above 1.
    cfg = tiny_config.replace(mode="dp-lora", epsilon=1.0, batch_size=None)
    with pytest.raises(ValueError, match=r"batch_size 1024 is larger than the \d+ training reports"):
        train(cfg, tiny_splits, progress=False)
