"""Masked reconstruction (the paper's Figure 2): a masked LM fine-tuned on reports regenerates their Findings.

A fraction of each report's Findings tokens is masked and the model fills every gap in one pass (the most
likely token); the original and the reconstruction are compared by the cosine similarity of their MiniLM
sentence embeddings (mean pooling of the packaged MiniLM-L6, as all-MiniLM is trained), and by the fraction
of masked tokens recovered exactly. Members (reports the model was fine-tuned on) against non-members
(held-out reports of the same draw), for the pretrained model, non-private LoRA and DP-LoRA at each ε.

Which masked LM: the packaged MiniLM-L6 ships its encoder without a masked-LM head (its checkpoint holds
``embeddings``, ``encoder`` and ``pooler`` weights only), and its top layer was trained for sentence
similarity, not token prediction, so a head tied to its embeddings would predict little until trained;
training one, and then memorising reports with its six 384-wide layers, is far beyond a 2-core laptop's
share of minutes. So by default a small masked LM (``transformers``' DeBERTa-v2, head tied to its input
embeddings; :func:`~dpcore.attacks.lm.small_masked_lm` says why not BERT) over MiniLM's WordPiece tokens is
pretrained briefly on *public* synthetic reports: that is the "pretrained" model. ``model`` names any
masked-LM folder or hub id instead (BERT-style encoders included: a missing head starts untrained and learns
in the same public pretraining).

Every similarity here is computed from private reports without noise: **outside ε**.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import nn

from dpcore.attacks.lm import (
    CompactVocab,
    MaskedLoss,
    Vocab,
    choose_positions,
    linear_names,
    load_language_model,
    pad,
    small_masked_lm,
    with_lora,
)
from dpcore.attacks.lm_train import TrainReport, TrainSettings, train_lm
from dpcore.data import generate_reports
from dpcore.models import load_backbone, load_tokenizer

__all__ = [
    "ReconstructionSettings",
    "ReconstructionResult",
    "RECONSTRUCTION_PROFILES",
    "run_reconstruction",
    "reconstruct",
    "sentence_embeddings",
    "cosine_rows",
    "summarise",
]

PRETRAINED, NON_PRIVATE, PRIVATE = "pretrained (public only)", "LoRA (no DP)", "DP-LoRA"
# LoRA goes on every linear map (linear_names): attention, feed-forward, the head's transform and its output
# layer. At this scale, LoRA without the output layer cannot tie a report's context to its rarer words (the
# input and output embeddings stay frozen), and memorises almost nothing (measured on the causal LM).


@dataclass(frozen=True)
class ReconstructionSettings:
    """Scale and schedule of :func:`run_reconstruction` (named sets in :data:`RECONSTRUCTION_PROFILES`)."""

    kind: str = "cxr"
    n_public: int = 600  # public synthetic reports the masked LM is pretrained on
    n_members: int = 50  # private reports it is fine-tuned on
    n_nonmembers: int = 50  # held-out reports of the same draw
    n_eval: int = 50  # members and non-members each that are reconstructed and compared
    mask_fraction: float = 0.3  # of each evaluated Findings' tokens
    # Masked in training: more targets per pass than BERT's 15%, which helps (Wettig et al., 2023).
    train_mask_rate: float = 0.4
    layers: int = 2
    hidden: int = 64
    lora_r: int = 64
    pretrain: TrainSettings = TrainSettings(epochs=12, batch_size=32, lr=3e-3)
    finetune: TrainSettings = TrainSettings(epochs=30, batch_size=32, lr=3e-3)
    # DP: the same adapters and schedule (batch size, learning rate, epochs), with Poisson batches, clipping
    # and noise.
    dp: TrainSettings = TrainSettings(epochs=30, batch_size=32, lr=3e-3, target_epsilon=10.0)
    epsilons: tuple[float, ...] = (10.0,)
    data_seed: int = 0
    seed: int = 0
    model: str | None = None  # a masked-LM folder or hub id instead of the small one (with its tokenizer)
    embedder: str = "minilm-l6"  # the sentence-embedding model


RECONSTRUCTION_PROFILES: dict[str, ReconstructionSettings] = {
    "quick": ReconstructionSettings(),
    "smoke": ReconstructionSettings(
        n_public=60,
        n_members=32,
        n_nonmembers=32,
        n_eval=8,
        layers=1,
        hidden=32,
        lora_r=4,
        pretrain=TrainSettings(epochs=1, batch_size=16),
        finetune=TrainSettings(epochs=1, batch_size=16),
        dp=TrainSettings(epochs=1, batch_size=16),
    ),
    "paper": ReconstructionSettings(
        n_public=5000,
        n_members=2000,
        n_nonmembers=2000,
        n_eval=300,
        layers=4,
        hidden=256,
        pretrain=TrainSettings(epochs=10, batch_size=64, lr=1e-3),
        finetune=TrainSettings(epochs=20, batch_size=64, lr=1e-3),
        dp=TrainSettings(epochs=20, batch_size=64, lr=1e-3),
        epsilons=(1.0, 10.0),
    ),
}


def base_mlm(settings: ReconstructionSettings, public_texts: Sequence[str]) -> tuple[nn.Module, Vocab]:
    """The masked LM before any training, with its vocabulary (see the module docstring for the choice)."""
    if settings.model is None:
        vocab = CompactVocab.from_texts(load_tokenizer("minilm-l6"), public_texts)
        return small_masked_lm(
            vocab.size, layers=settings.layers, hidden=settings.hidden, seed=settings.seed
        ), vocab
    return load_language_model(settings.model, causal=False, public_texts=public_texts)


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    vocab: Vocab,
    sequences: Sequence[Sequence[int]],
    *,
    fraction: float,
    seed: int = 0,
    max_length: int = 256,
) -> tuple[list[list[int]], list[float]]:
    """Mask ``fraction`` of each sequence's inner tokens (positions drawn from ``seed`` alone, so the same
    for every model) and fill each with the model's most likely token in one pass. Returns the reconstructed
    ids and, per sequence, the fraction of masked tokens recovered exactly."""
    model.eval()
    ids, mask = pad(sequences, pad_id=vocab.pad_id, max_length=max_length)
    chosen = choose_positions(mask, fraction, torch.Generator().manual_seed(seed))
    out = ids.clone()
    for start in range(0, len(ids), 32):
        rows = slice(start, start + 32)
        logits = model(
            input_ids=ids[rows].masked_fill(chosen[rows], vocab.mask_id), attention_mask=mask[rows]
        ).logits
        specials = {vocab.pad_id, vocab.mask_id, vocab.bos_id, vocab.eos_id} - {None}
        logits[..., sorted(specials)] = -math.inf  # fill gaps with words, not with special tokens
        out[rows] = torch.where(chosen[rows], logits.argmax(-1), ids[rows])
    exact = ((out == ids) & chosen).sum(1) / chosen.sum(1).clamp(min=1)
    lengths = mask.sum(1).tolist()
    return [row[:n] for row, n in zip(out.tolist(), lengths, strict=True)], exact.tolist()


@torch.no_grad()
def sentence_embeddings(
    texts: Sequence[str], *, model: str = "minilm-l6", batch_size: int = 32, max_length: int = 256
) -> torch.Tensor:
    """Mean-pooled last hidden states of ``model`` for each text (all-MiniLM's sentence embedding),
    ``[N, H]``.
    Each distinct text is embedded once."""
    distinct = list(dict.fromkeys(texts))
    tokenizer, encoder = load_tokenizer(model), load_backbone(model).eval()
    order = sorted(range(len(distinct)), key=lambda i: len(distinct[i]))  # batches of similar length pad less
    pooled = torch.empty((len(distinct), encoder.config.hidden_size))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [distinct[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled[idx] = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    where = {t: i for i, t in enumerate(distinct)}
    return pooled[[where[t] for t in texts]]


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``a`` with the same row of ``b``.

    >>> a, b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [-1.0, -1.0]])
    >>> cosine_rows(a, b).round().tolist()
    [1.0, -1.0]
    """
    return nn.functional.cosine_similarity(a, b, dim=1)


@dataclass
class ReconstructionResult:
    """One row per model and evaluated report (``table``), the training reports, an example per model."""

    table: pd.DataFrame
    reports: dict[str, TrainReport]
    settings: ReconstructionSettings
    vocab_size: int
    parameters: int = 0  # of the masked LM (before LoRA)


def run_reconstruction(
    settings: ReconstructionSettings = ReconstructionSettings(),
    *,
    progress: Callable[[str], None] | None = None,
) -> ReconstructionResult:
    """Pretrain on public reports, fine-tune without and with DP, reconstruct members and non-members."""
    say = progress or (lambda _: None)
    public = list(
        generate_reports(
            kind=settings.kind, n=settings.n_public, seed=settings.data_seed + 1000, patient_details=True
        )["findings"]
    )
    private = list(
        generate_reports(
            kind=settings.kind,
            n=settings.n_members + settings.n_nonmembers,
            seed=settings.data_seed,
            patient_details=True,
        )["findings"]
    )
    model, vocab = base_mlm(settings, public)
    members, nonmembers = private[: settings.n_members], private[settings.n_members :]
    reports: dict[str, TrainReport] = {}
    loss = MaskedLoss(mask_id=vocab.mask_id, rate=settings.train_mask_rate, seed=settings.seed)
    if settings.pretrain.epochs:
        say("pretraining the masked LM on public reports")
        reports[PRETRAINED] = train_lm(
            model, vocab.encode(public), loss=loss, settings=settings.pretrain, pad_id=vocab.pad_id
        )
    models: list[tuple[str, float, nn.Module]] = [(PRETRAINED, math.nan, model)]
    train_seqs = vocab.encode(members)
    runs = [(NON_PRIVATE, math.inf, settings.finetune)]
    runs += [(PRIVATE, eps, replace(settings.dp, target_epsilon=eps)) for eps in settings.epsilons]
    for name, eps, schedule in runs:
        say(f"fine-tuning {name}" + (f" at epsilon {eps:g}" if math.isfinite(eps) else ""))
        tuned = with_lora(model, targets=linear_names(model), r=settings.lora_r, alpha=2 * settings.lora_r)
        reports[name if math.isinf(eps) else f"{name} ε={eps:g}"] = train_lm(
            tuned, train_seqs, loss=loss, settings=schedule, pad_id=vocab.pad_id
        )
        models.append((name, eps, tuned))
    say("reconstructing and embedding")
    n = settings.n_eval
    evaluated = [(True, i, t) for i, t in enumerate(members[:n])] + [
        (False, i, t) for i, t in enumerate(nonmembers[:n])
    ]
    seqs = vocab.encode([t for _, _, t in evaluated])
    originals = [vocab.decode(s) for s in seqs]  # as the model sees them (lower case, unknown tokens marked)
    rows, texts = [], list(originals)
    for name, eps, m in models:
        rebuilt, exact = reconstruct(m, vocab, seqs, fraction=settings.mask_fraction, seed=settings.seed + 1)
        for (member, i, _), ids, acc in zip(evaluated, rebuilt, exact, strict=True):
            rows.append(
                {
                    "model": name,
                    "epsilon": eps,
                    "member": member,
                    "report": i,
                    "exact": acc,
                    "reconstruction": vocab.decode(ids),
                }
            )
            texts.append(rows[-1]["reconstruction"])
    emb = sentence_embeddings(texts, model=settings.embedder)
    k = len(originals)
    sims = cosine_rows(emb[k:], emb[:k].repeat(len(models), 1)).tolist()
    table = pd.DataFrame(rows)
    table["cosine"] = sims
    table["original"] = originals * len(models)
    return ReconstructionResult(
        table=table,
        reports=reports,
        settings=settings,
        vocab_size=vocab.size,
        parameters=sum(p.numel() for p in model.parameters()),
    )


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean cosine similarity and exact recovery per model, ε and membership, and the gap between members
    and non-members.

    >>> t = pd.DataFrame({"model": ["m"] * 4, "epsilon": [1.0] * 4, "member": [True, True, False, False],
    ...                   "cosine": [0.9, 0.8, 0.7, 0.6], "exact": [0.5, 0.5, 0.25, 0.25]})
    >>> round(float(summarise(t)["cosine_gap"].iloc[0]), 3)
    0.2
    """
    means = table.groupby(["model", "epsilon", "member"], dropna=False, sort=False)[
        ["cosine", "exact"]
    ].mean()
    wide = means.unstack("member")
    out = pd.DataFrame(
        {
            "cosine_members": wide[("cosine", True)],
            "cosine_nonmembers": wide[("cosine", False)],
            "exact_members": wide[("exact", True)],
            "exact_nonmembers": wide[("exact", False)],
        }
    )
    out["cosine_gap"] = out["cosine_members"] - out["cosine_nonmembers"]
    out["exact_gap"] = out["exact_members"] - out["exact_nonmembers"]
    return out.reset_index()
