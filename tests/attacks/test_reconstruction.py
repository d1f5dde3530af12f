"""Masked reconstruction: masking, one-pass filling, sentence embeddings, memorisation shown by members."""

from __future__ import annotations

import pytest
import torch

from dpcore.attacks.lm import (
    CompactVocab,
    MaskedLoss,
    choose_positions,
    linear_names,
    pad,
    small_masked_lm,
    with_lora,
)
from dpcore.attacks.lm_train import TrainSettings, train_lm
from dpcore.attacks.reconstruction import (
    RECONSTRUCTION_PROFILES,
    cosine_rows,
    reconstruct,
    run_reconstruction,
    sentence_embeddings,
    summarise,
)
from dpcore.data import generate_reports
from dpcore.models import load_tokenizer


@pytest.fixture(scope="module")
def reports() -> list[str]:
    return list(generate_reports(kind="cxr", n=48, seed=7, patient_details=True)["findings"])


@pytest.fixture(scope="module")
def vocab(reports) -> CompactVocab:
    return CompactVocab.from_texts(load_tokenizer("minilm-l6"), reports)


def test_masking_leaves_frame_and_padding_alone():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]])
    chosen = choose_positions(mask, 0.5, torch.Generator().manual_seed(0))
    assert not chosen[:, 0].any()  # [CLS]
    assert not chosen[0, 5] and not chosen[1, 2]  # [SEP]
    assert not (chosen & (mask == 0)).any()  # padding
    assert chosen.sum(1).min() >= 1  # every row has a target


def test_reconstruct_changes_only_the_masked_tokens_the_seed_chose(vocab, reports):
    seqs = vocab.encode(reports[:6])
    _, mask = pad(seqs, pad_id=vocab.pad_id, max_length=256)
    chosen = choose_positions(mask, 0.3, torch.Generator().manual_seed(5))
    for seed in (0, 1):  # two different models: the masked positions depend on the seed alone
        model = small_masked_lm(vocab.size, layers=1, hidden=16, seed=seed)
        rebuilt, exact = reconstruct(model, vocab, seqs, fraction=0.3, seed=5)
        assert all(0.0 <= e <= 1.0 for e in exact)
        for i, (before, after) in enumerate(zip(seqs, rebuilt, strict=True)):
            assert len(before) == len(after)
            changed = {j for j, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
            assert changed <= set(torch.nonzero(chosen[i]).flatten().tolist())


def test_sentence_embeddings_and_cosine():
    emb = sentence_embeddings(["No pleural effusion.", "No pleural effusion.", "Heart size is enlarged."])
    assert emb.shape == (3, 384)
    cos = cosine_rows(emb[:2], emb[[1, 2]])
    assert float(cos[0]) == pytest.approx(1.0, abs=1e-5) and float(cos[1]) < 0.99


def test_members_reconstruct_better_than_non_members_for_a_memorising_model(vocab, reports):
    """Two masked LMs trained (without DP) many epochs, one on each half of 24 reports: each fills the gaps
    of its own half better than those of the other, by exact recovery and by MiniLM cosine similarity. The
    swap makes every report a member once and a non-member once, so the comparison does not hang on which
    reports happen to be easier."""
    halves = (reports[:12], reports[12:24])
    scores = {True: [], False: []}  # member -> (exact, cosine) per model and half
    for k, half in enumerate(halves):
        model = small_masked_lm(vocab.size, layers=2, hidden=48, seed=0)
        settings = TrainSettings(epochs=120, batch_size=4, lr=3e-3)  # from scratch: it learns and memorises
        train_lm(
            model,
            vocab.encode(half),
            loss=MaskedLoss(mask_id=vocab.mask_id, rate=0.4),
            settings=settings,
            pad_id=vocab.pad_id,
        )
        for j, group in enumerate(halves):
            seqs = vocab.encode(group)
            rebuilt, exact = reconstruct(model, vocab, seqs, fraction=0.3, seed=1)
            originals = [vocab.decode(s) for s in seqs]
            emb = sentence_embeddings(originals + [vocab.decode(s) for s in rebuilt])
            cosine = cosine_rows(emb[: len(seqs)], emb[len(seqs) :])
            scores[j == k].append((sum(exact) / len(exact), float(cosine.mean())))
    member = [sum(v) / 2 for v in zip(*scores[True], strict=True)]
    nonmember = [sum(v) / 2 for v in zip(*scores[False], strict=True)]
    assert member[0] > nonmember[0] + 0.05  # exact recovery; measured 0.34 against 0.20
    assert member[1] > nonmember[1]  # cosine similarity; measured 0.82 against 0.78


def test_lora_targets_every_linear_map_of_the_masked_lm():
    names = linear_names(small_masked_lm(30, layers=1, hidden=16))
    assert {"query_proj", "key_proj", "value_proj", "dense", "decoder"} <= set(names)
    lora = with_lora(small_masked_lm(30, layers=1, hidden=16), targets=names, r=2, alpha=4)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_run_reconstruction_smoke_with_an_encoder_folder(tiny_model):
    """``model`` may be a plain BERT encoder folder (no masked-LM head): the head learns on public text."""
    settings = RECONSTRUCTION_PROFILES["smoke"]
    result = run_reconstruction(type(settings)(**{**settings.__dict__, "model": tiny_model, "n_eval": 4}))
    table = result.table
    assert set(table["model"]) == {"pretrained (public only)", "LoRA (no DP)", "DP-LoRA"}
    assert len(table) == 3 * 2 * 4 and table["cosine"].between(-1.0, 1.0 + 1e-6).all()
    dp = result.reports["DP-LoRA ε=10"]
    assert dp.poisson and set(dp.epsilon) == {"rdp", "prv"}
    summary = summarise(table)
    assert {"cosine_members", "cosine_nonmembers", "cosine_gap"} <= set(summary.columns)
