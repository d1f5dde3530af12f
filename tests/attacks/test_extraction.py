"""Report completion: exposure arithmetic, the DP LM training's wiring, and memorisation that DP prevents."""

from __future__ import annotations

import math
import random

import pytest
import torch

from dpcore.attacks.canaries import (
    Canary,
    SecretFormat,
    attack_canary,
    candidate_logprobs,
    draw_date,
    exposure,
    format_alphabet,
    make_canaries,
    name_pool,
    rank_of,
)
from dpcore.attacks.extraction import (
    EXTRACTION_PROFILES,
    GPT2_LORA_TARGETS,
    occurrences,
    private_corpus,
    run_extraction,
    summarise,
)
from dpcore.attacks.lm import CompactVocab, causal_loss, small_gpt2, with_lora
from dpcore.attacks.lm_train import TrainSettings, train_lm
from dpcore.models import load_tokenizer


def test_exposure_of_a_hand_made_ranking():
    # Four candidates; the secret (index 2) is the second likeliest: rank 2 of 4, exposure log2(4) - 1 = 1.
    scores = torch.tensor([-4.0, -1.0, -2.0, -3.0])
    assert rank_of(scores, 2) == 2
    assert exposure(rank=rank_of(scores, 2), space=4) == pytest.approx(1.0)
    assert exposure(rank=1, space=4) == pytest.approx(2.0)  # ranked first: all log2 |R| bits
    assert exposure(rank=4, space=4) == pytest.approx(0.0)  # ranked last
    tied = torch.tensor([-1.0, -1.0, -2.0])
    assert rank_of(tied, 1) == 1  # a tie does not push the secret down
    with pytest.raises(ValueError):
        exposure(rank=0, space=4)


def test_secret_format_and_canaries():
    fmt = SecretFormat(low=5, high=40)
    assert len(fmt.values) == fmt.size == 36 * 36
    canaries = make_canaries(repeats=(0, 1, 4, 16), per_repeat=3, seed=1, fmt=fmt)
    assert len({c.name for c in canaries}) == 12  # distinct patients
    assert all(c.text.startswith(c.prefix + " " + c.secret_text + " mm") for c in canaries)
    assert make_canaries(seed=1) == make_canaries(seed=1)


@pytest.fixture(scope="module")
def vocab() -> CompactVocab:
    return CompactVocab.from_texts(load_tokenizer("minilm-l6"), format_alphabet())


def test_every_candidate_is_in_vocabulary(vocab):
    fmt = SecretFormat()
    ids = vocab.encode([fmt.render(v) for v in fmt.values], frame=False)
    assert all(vocab.unk_id not in row and len(row) == 3 for row in ids)  # "A", "x", "B": one token each
    assert vocab.unk_id not in vocab.encode([c.text for c in make_canaries(per_repeat=8)])[0]


def test_candidate_logprobs_match_scoring_each_sequence(vocab):
    """Grouping candidates by stem gives the same log-probabilities as scoring every full sequence."""
    torch.manual_seed(0)
    model = small_gpt2(vocab.size, layers=1, hidden=16).eval()
    prefix = vocab.encode(["Patient Beralo has a nodule measuring"])[0][:-1]
    cands = vocab.encode(["5 x 6", "5 x 7", "12 x 6", "7"], frame=False)
    fast = candidate_logprobs(model, prefix, cands, batch_size=2)
    for i, cand in enumerate(cands):
        ids = torch.tensor([prefix + cand])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        slow = sum(float(logp[len(prefix) - 1 + k, t]) for k, t in enumerate(cand))
        assert float(fast[i]) == pytest.approx(slow, abs=1e-4)


def test_occurrences_counts_only_what_trains():
    assert occurrences([[1, 2, 3], [3, 1, 2]], [1, 2], max_length=2) == 1


def test_private_corpus_plants_each_canary_as_often_as_asked():
    settings = EXTRACTION_PROFILES["smoke"]
    canaries = make_canaries(repeats=(0, 1, 4), per_repeat=2, seed=0)
    findings = private_corpus(settings, canaries)
    assert len(findings) == settings.n_private
    for c in canaries:
        assert sum(t.count(c.text.rstrip(".")) for t in findings) == c.repeats


# -- training: DP wiring, and memorisation with and without DP ---------------------------------------------
def format_sentences(names, n, seed):
    rng, fmt = random.Random(seed), SecretFormat()
    return [
        Canary(name=rng.choice(names), secret=fmt.draw(rng), date=draw_date(rng), repeats=0).text
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def pretrained(vocab):
    """A tiny GPT-2 that has learned the canary format from public sentences (other names)."""
    canary = make_canaries(repeats=(16,), per_repeat=1, seed=3)[0]
    public_names = [n for n in name_pool() if n != canary.name]
    model = small_gpt2(vocab.size, layers=1, hidden=48, seed=0)
    public = vocab.encode(format_sentences(public_names, 200, seed=1))
    train_lm(
        model, public, loss=causal_loss, settings=TrainSettings(epochs=4, batch_size=16, lr=1e-2), pad_id=0
    )
    # The private set: the canary 16 times among 48 other sentences of the format.
    private = vocab.encode([canary.text] * 16 + format_sentences(public_names, 48, seed=2))
    return model, canary, private


def test_dp_training_wiring(pretrained, vocab):
    model, _, private = pretrained
    lora = with_lora(model, targets=GPT2_LORA_TARGETS, r=4, alpha=8)
    report = train_lm(
        lora,
        private,
        loss=causal_loss,
        settings=TrainSettings(epochs=1, batch_size=16, target_epsilon=2.0),
        pad_id=vocab.pad_id,
    )
    assert report.private and report.poisson  # Opacus's DPDataLoader: Poisson sampling
    assert len(report.loss_shape) == 1  # one loss per sequence: [B]
    assert len(set(report.batch_sizes)) > 1  # Poisson batches vary in size (shuffled ones would not)
    assert report.delta < 1 / len(private)
    assert set(report.epsilon) == {"rdp", "prv"}  # both accountants
    assert (
        0 < report.epsilon["rdp"] <= 2.0 + 1e-6 and 0 < report.epsilon["prv"] <= report.epsilon["rdp"] * 1.1
    )
    assert report.noise_multiplier > 0 and report.sample_rate == pytest.approx(16 / 64)
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in lora.parameters())


def test_causal_loss_is_per_sequence():
    model = small_gpt2(50, layers=1, hidden=16).eval()  # no dropout: the two calls must agree
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = (ids != 0).long()
    per_example = causal_loss(model, ids, mask)
    assert per_example.shape == (2,)
    # Padding does not count: the second row's loss is the same without its padding.
    alone = causal_loss(model, ids[1:, :3], mask[1:, :3])
    assert float(per_example[1]) == pytest.approx(float(alone[0]), abs=1e-5)


def test_non_private_lora_memorises_a_repeated_canary_and_dp_does_not(pretrained, vocab):
    model, canary, private = pretrained
    results = {}
    for name, eps in (("lora", None), ("dp", 1.0)):
        lora = with_lora(model, targets=GPT2_LORA_TARGETS, r=16, alpha=32)
        settings = TrainSettings(epochs=25, batch_size=16, lr=1e-2, target_epsilon=eps)
        train_lm(lora, private, loss=causal_loss, settings=settings, pad_id=vocab.pad_id)
        results[name] = attack_canary(lora, vocab, canary, samples=8)
    assert results["lora"].rank == 1 and results["lora"].greedy_hit
    assert results["lora"].exposure == pytest.approx(math.log2(SecretFormat().size))
    # At epsilon 1 the canary, a quarter of the private set, is not extracted and ranks far lower (measured
    # over three seeds: ranks 22 to 439). At epsilon 10 it is: 16 copies are a group of 16, whose guarantee
    # is far weaker than a single report's (the chapter's point about the privacy unit).
    assert results["dp"].rank > 1 and not results["dp"].greedy_hit
    assert results["dp"].exposure < results["lora"].exposure - 3


def test_run_extraction_smoke():
    result = run_extraction(EXTRACTION_PROFILES["smoke"])
    table = result.table
    assert set(table["model"]) == {"pretrained (public only)", "LoRA (no DP)", "DP-LoRA"}
    assert len(table) == 3 * len(result.canaries)
    assert table["rank"].between(1, result.space).all()
    assert (table.loc[table["model"] == "DP-LoRA", "epsilon_rdp"] <= 10.0 + 1e-6).all()
    planted = table.drop_duplicates("name").set_index("name")
    assert (planted["in_training"] <= planted["repeats"]).all()
    summary = summarise(table)
    assert set(summary["repeats"]) == set(EXTRACTION_PROFILES["smoke"].repeats)


def test_run_extraction_with_a_causal_lm_folder(tmp_path):
    """``lm_model`` may be any causal LM folder; with a BERT-style tokenizer its vocabulary is cut to the
    public text's tokens (embeddings and tied output layer alike)."""
    small_gpt2(30522, layers=1, hidden=16).save_pretrained(tmp_path)
    load_tokenizer("minilm-l6").save_pretrained(tmp_path)
    settings = EXTRACTION_PROFILES["smoke"]
    result = run_extraction(type(settings)(**{**settings.__dict__, "lm_model": str(tmp_path)}))
    assert result.vocab_size < 2000 and result.table["rank"].between(1, result.space).all()
