"""Privacy-correctness tests in Opacus's own style: compare two computations that must agree.

Per-sample gradients against a one-example-at-a-time loop, clipping bounds, the noise scale, hooks against
ghost clipping, chunked against unchunked logical batches, empty Poisson batches.
"""

from __future__ import annotations

import pytest
import torch

from dpcore.models import build_model, load_tokenizer
from dpcore.training import (
    length_sorted_chunks,
    make_private,
    pad_collate,
    per_example_loss,
    seed_everything,
    train_step,
)

TEXTS = [
    "no acute cardiopulmonary process",
    "small left pleural effusion with adjacent atelectasis",
    "heart size is mildly enlarged. no pneumothorax.",
    "clear lungs",
    "there is a right lower lobe consolidation concerning for pneumonia and a small effusion",
    "support devices in place",
]


@pytest.fixture(scope="module")
def batch(tiny_config):
    """Six reports of different lengths, padded together (so padding is exercised), with targets."""
    tok = load_tokenizer(tiny_config.model.model)
    g = torch.Generator().manual_seed(0)
    items = [
        (torch.tensor(ids), (torch.rand(14, generator=g) < 0.3).float()) for ids in tok(TEXTS)["input_ids"]
    ]
    return items, pad_collate(tok.pad_token_id)


def _model(cfg, mode="dp-lora"):
    seed_everything(0)
    model = build_model(cfg.model, num_labels=14, mode=mode)
    return _without_dropout(model)


def _without_dropout(model):
    """Dropout would make two computations of the same gradient differ: switch it off (train mode stays)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def test_per_sample_gradients_of_the_lora_model_match_a_one_at_a_time_loop(tiny_config, batch):
    items, collate = batch
    model = _model(tiny_config)
    # Reference: the gradient of each example alone (no padding at all).
    reference = []
    for ids, target in items:
        model.zero_grad(set_to_none=True)
        x, m, t = collate([(ids, target)])
        per_example_loss(model(x, m), t).sum().backward()
        reference.append({n: p.grad.clone() for n, p in _trainable(model).items()})
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD(list(_trainable(model).values()), lr=0.1)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=6,
        grad_sample_mode="hooks",
    )
    x, m, t = collate(items)
    per_example_loss(private.module(x, m), t).mean().backward()
    named = _trainable(model)
    assert any("lora_A" in n for n in named) and "head.weight" in named
    for name, p in named.items():
        assert p.grad_sample.shape == (6, *p.shape), name
        for i in range(6):
            assert torch.allclose(p.grad_sample[i], reference[i][name], atol=1e-6, rtol=1e-4), (name, i)


def _raw_norms(model, items, collate):
    norms = []
    for ids, target in items:
        model.zero_grad(set_to_none=True)
        x, m, t = collate([(ids, target)])
        per_example_loss(model(x, m), t).sum().backward()
        norms.append(torch.cat([p.grad.flatten() for p in _trainable(model).values()]).norm())
    model.zero_grad(set_to_none=True)
    return torch.stack(norms)


@pytest.mark.parametrize("grad_sample_mode", ["hooks", "ghost"])
def test_each_clipped_per_sample_norm_is_at_most_c_and_equals_c_when_larger(
    tiny_config, batch, grad_sample_mode
):
    items, collate = batch
    model = _model(tiny_config)
    raw = _raw_norms(model, items, collate)
    c = float(raw.median())  # some examples are clipped, some are not
    assert (raw > c * 1.01).any() and (raw < c * 0.99).any()
    optimizer = torch.optim.SGD(list(_trainable(model).values()), lr=0.0)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=0.0,
        max_grad_norm=c,
        expected_batch_size=1,
        grad_sample_mode=grad_sample_mode,
        example_inputs=collate(items[:2])[:2],
    )
    for i, (ids, target) in enumerate(items):
        # The optimizer's own path: per-sample norms, clipping, no noise, divided by a batch of 1.
        x, m, t = collate([(ids, target)])
        if private.criterion is not None:
            private.criterion(private.module(x, m), t).backward()
        else:
            per_example_loss(private.module(x, m), t).mean().backward()
        private.optimizer.pre_step()
        clipped = torch.cat([p.grad.flatten() for p in private.optimizer.params]).norm()
        private.optimizer.zero_grad(set_to_none=True)
        expected = min(float(raw[i]), c)
        assert float(clipped) <= c * (1 + 1e-4)
        assert float(clipped) == pytest.approx(expected, rel=1e-3), (i, float(raw[i]), c)


def _step_gradient(cfg, items, collate, *, mode, grad_sample_mode, sigma, c, chunk, seed=0):
    """The gradient one DP step applies (lr 1 SGD: weights before minus after), over chunks of ``chunk``."""
    model = _model(cfg, mode)
    before = {n: p.detach().clone() for n, p in _trainable(model).items()}
    optimizer = torch.optim.SGD(list(_trainable(model).values()), lr=1.0)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=sigma,
        max_grad_norm=c,
        expected_batch_size=len(items),
        grad_sample_mode=grad_sample_mode,
        example_inputs=collate(items[:2])[:2],
    )
    lengths = torch.tensor([len(i[0]) for i in items])
    chunks = [
        collate([items[j] for j in idx.tolist()])
        for idx in length_sorted_chunks(torch.arange(len(items)), lengths, chunk)
    ]
    torch.manual_seed(seed)
    train_step(private.module, private.optimizer, chunks, logical_size=len(items), private=private)
    return {n: before[n] - p.detach() for n, p in _trainable(model).items()}


@pytest.mark.parametrize("mode", ["dp-lora", "dp-full"])
def test_hooks_and_ghost_clipping_agree_and_chunking_changes_nothing(tiny_config, batch, mode):
    items, collate = batch
    args = dict(mode=mode, sigma=0.0, c=0.05)  # a small bound: clipping is active
    whole = _step_gradient(tiny_config, items, collate, grad_sample_mode="hooks", chunk=6, **args)
    chunked = _step_gradient(tiny_config, items, collate, grad_sample_mode="hooks", chunk=2, **args)
    ghost = _step_gradient(tiny_config, items, collate, grad_sample_mode="ghost", chunk=4, **args)
    assert whole.keys() == ghost.keys()
    assert sum(float(g.abs().sum()) for g in whole.values()) > 0
    for name in whole:
        assert torch.allclose(whole[name], chunked[name], atol=1e-6, rtol=1e-4), name
        assert torch.allclose(whole[name], ghost[name], atol=1e-6, rtol=1e-4), name
    # The step is the mean of clipped per-example gradients: its norm is at most C.
    norm = torch.cat([g.flatten() for g in whole.values()]).norm()
    assert float(norm) <= 0.05 * (1 + 1e-4)


@pytest.mark.parametrize("grad_sample_mode", ["hooks", "ghost"])
def test_noise_standard_deviation_is_sigma_c_over_b(tiny_config, batch, grad_sample_mode):
    items, collate = batch
    sigma, c, b = 2.0, 0.5, len(items)
    clean = _step_gradient(
        tiny_config,
        items,
        collate,
        mode="dp-lora",
        grad_sample_mode=grad_sample_mode,
        sigma=0.0,
        c=c,
        chunk=3,
    )
    noisy = _step_gradient(
        tiny_config,
        items,
        collate,
        mode="dp-lora",
        grad_sample_mode=grad_sample_mode,
        sigma=sigma,
        c=c,
        chunk=3,
    )
    noise = torch.cat([(noisy[n] - clean[n]).flatten() for n in clean])
    assert noise.numel() > 1000
    assert float(noise.std()) == pytest.approx(sigma * c / b, rel=0.15)
    assert abs(float(noise.mean())) < 0.1 * sigma * c / b


@pytest.mark.parametrize("grad_sample_mode", ["hooks", "ghost"])
def test_an_empty_poisson_batch_is_still_a_noised_step(tiny_config, batch, grad_sample_mode):
    items, collate = batch
    model = _model(tiny_config)
    before = {n: p.detach().clone() for n, p in _trainable(model).items()}
    optimizer = torch.optim.SGD(list(_trainable(model).values()), lr=1.0)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=4,
        grad_sample_mode=grad_sample_mode,
        example_inputs=collate(items[:2])[:2],
    )
    steps = []
    private.optimizer.attach_step_hook(lambda opt: steps.append(1))
    assert train_step(private.module, private.optimizer, [], logical_size=0, private=private) == []
    assert len(steps) == 1  # the accountant's hook sees a step
    moved = torch.cat([(before[n] - p.detach()).flatten() for n, p in _trainable(model).items()])
    # Pure noise of standard deviation sigma * C / B.
    assert float(moved.std()) == pytest.approx(1.0 / 4, rel=0.15)


def test_a_layer_used_at_every_depth_is_detected_and_refused_with_ghost_and_exact_with_hooks(tmp_path, batch):
    from transformers import AlbertConfig, AlbertModel

    from dpcore.config import ModelConfig
    from dpcore.models import MultiLabelClassifier, add_lora

    items, collate = batch
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=30522,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
    )
    backbone = add_lora(
        AlbertModel(config, add_pooling_layer=False), ModelConfig(lora_targets=("query", "value"))
    )
    model = _without_dropout(MultiLabelClassifier(backbone, num_labels=14).train())
    optimizer = torch.optim.SGD(list(_trainable(model).values()), lr=0.1)
    with pytest.raises(ValueError, match="used more than once in one forward pass .*albert"):
        make_private(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=6,
            grad_sample_mode="ghost",
            example_inputs=collate(items[:2])[:2],
        )
    reference = []
    for ids, target in items[:3]:
        model.zero_grad(set_to_none=True)
        x, m, t = collate([(ids, target)])
        per_example_loss(model(x, m), t).sum().backward()
        reference.append({n: p.grad.clone() for n, p in _trainable(model).items()})
    model.zero_grad(set_to_none=True)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=3,
        grad_sample_mode="hooks",
    )
    x, m, t = collate(items[:3])
    per_example_loss(private.module(x, m), t).mean().backward()
    for name, p in _trainable(model).items():
        for i in range(3):
            assert torch.allclose(p.grad_sample[i], reference[i][name], atol=1e-6, rtol=1e-4), (name, i)
