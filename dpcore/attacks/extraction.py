"""Report completion (the paper's Figure 1): a causal LM fine-tuned on reports completes a patient's details.

Canaries (:mod:`dpcore.attacks.canaries`) carry one patient's made-up name, nodule measurement and date; each
is planted 0 (a control), 1, 4 or 16 times in the Findings of private synthetic reports
(:func:`dpcore.data.generate_reports` with ``canaries=``; ``patient_details=True`` gives every other patient
measurements and dates of their own). A small GPT-2 learns the language from a disjoint draw of *public*
synthetic reports (which also use the canary format, with other names and random measurements), then LoRA
adapters are fine-tuned on the private reports without DP and with DP-SGD at each target ε. Every model is
prompted with every canary's prefix: rank, exposure and extraction of the secret measurement.

Every number here is computed from the private reports (or models trained on them) without noise: the attack
results describe the models and are **outside ε**; only the DP models themselves are covered.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd
from torch import nn

from dpcore.attacks.canaries import (
    Canary,
    SecretFormat,
    attack_canary,
    draw_date,
    encode_candidates,
    exposure,
    format_alphabet,
    make_canaries,
    name_pool,
    rank_of,
)
from dpcore.attacks.lm import (
    CompactVocab,
    Vocab,
    causal_loss,
    linear_names,
    load_language_model,
    small_gpt2,
    with_lora,
)
from dpcore.attacks.lm_train import TrainReport, TrainSettings, train_lm
from dpcore.data import generate_reports
from dpcore.models import load_tokenizer

__all__ = [
    "ExtractionSettings",
    "ExtractionResult",
    "EXTRACTION_PROFILES",
    "run_extraction",
    "summarise",
    "exposure",
    "rank_of",
    "Canary",
    "SecretFormat",
]

PRETRAINED, NON_PRIVATE, PRIVATE = "pretrained (public only)", "LoRA (no DP)", "DP-LoRA"
# Every linear map of GPT-2's blocks (c_proj: attention and MLP) and the output layer. Without the output
# layer (tied to the frozen input embeddings) LoRA at this scale memorises almost nothing: measured, the
# 16-times canaries ranked 31 to 1,214 (of 1,296) after 30 epochs, against 1 to 8 with it after 15.
GPT2_LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "lm_head")


@dataclass(frozen=True)
class ExtractionSettings:
    """Scale and schedule of :func:`run_extraction` (named sets in :data:`EXTRACTION_PROFILES`)."""

    kind: str = "cxr"
    n_public: int = 600  # public synthetic reports the LM learns the language from
    public_format: int = 100  # public sentences in the canary format (other names, random measurements)
    n_private: int = 300  # private reports; the canaries are planted in them
    repeats: tuple[int, ...] = (0, 1, 4, 16)
    per_repeat: int = 4  # canaries per repetition count
    layers: int = 2
    hidden: int = 64
    lora_r: int = 32
    pretrain: TrainSettings = TrainSettings(epochs=10, batch_size=32, lr=3e-3)
    finetune: TrainSettings = TrainSettings(epochs=15, batch_size=32, lr=3e-3)
    # DP: the same adapters and schedule (batch size, learning rate, epochs), with Poisson batches, clipping
    # and noise.
    dp: TrainSettings = TrainSettings(epochs=15, batch_size=32, lr=3e-3, target_epsilon=10.0)
    epsilons: tuple[float, ...] = (10.0,)  # one DP model per target epsilon (dp's own target is replaced)
    samples: int = 32  # sampled completions per canary and model
    data_seed: int = 0
    seed: int = 0
    lm_model: str | None = (
        None  # a causal LM folder or hub id instead of the small GPT-2 (with its tokenizer)
    )


EXTRACTION_PROFILES: dict[str, ExtractionSettings] = {
    "quick": ExtractionSettings(),
    "smoke": ExtractionSettings(
        n_public=60,
        public_format=10,
        n_private=40,
        repeats=(0, 1, 4),
        per_repeat=1,
        layers=1,
        hidden=32,
        lora_r=4,
        pretrain=TrainSettings(epochs=1, batch_size=16),
        finetune=TrainSettings(epochs=1, batch_size=16),
        dp=TrainSettings(epochs=1, batch_size=16),
        samples=4,
    ),
    # Larger, for a workstation; the paper's GPT-2 Large is lm_model="gpt2-large" (needs it in the hub cache).
    "paper": ExtractionSettings(
        n_public=5000,
        public_format=500,
        n_private=3000,
        per_repeat=10,
        layers=4,
        hidden=256,
        pretrain=TrainSettings(epochs=5, batch_size=64, lr=1e-3),
        finetune=TrainSettings(epochs=20, batch_size=64, lr=2e-3),
        dp=TrainSettings(epochs=20, batch_size=64, lr=2e-3),
        epsilons=(1.0, 10.0),
        samples=100,
    ),
}


def public_corpus(settings: ExtractionSettings, names: Sequence[str]) -> list[str]:
    """Findings of the public draw (a data seed of its own), with ``public_format`` canary-format sentences
    whose names come from ``names`` (never a canary's) and whose measurements and dates are random."""
    rng = random.Random(settings.data_seed + 1000)
    fmt = SecretFormat()
    sentences = [
        Canary(name=rng.choice(list(names)), secret=fmt.draw(rng), date=draw_date(rng), repeats=0).text
        for _ in range(settings.public_format)
    ]
    ds = generate_reports(
        kind=settings.kind,
        n=settings.n_public,
        seed=settings.data_seed + 1000,
        patient_details=True,
        canaries=sentences,
        canary_repeats=1,
    )
    return list(ds["findings"])


def private_corpus(settings: ExtractionSettings, canaries: Sequence[Canary]) -> list[str]:
    """Findings of the private reports: one draw per repetition count (``n_private`` shared evenly), each
    carrying that count's canaries ``repeats`` times. The canaries' sentence mentions a nodule while the
    reports' labels are left as drawn: these attacks never read labels."""
    counts = sorted({c.repeats for c in canaries if c.repeats > 0})
    findings: list[str] = []
    for k, r in enumerate(counts):
        n = settings.n_private // len(counts) + (k < settings.n_private % len(counts))
        texts = [c.text for c in canaries if c.repeats == r]
        ds = generate_reports(
            kind=settings.kind,
            n=n,
            seed=settings.data_seed + r,
            patient_details=True,
            canaries=texts,
            canary_repeats=r,
        )
        findings += list(ds["findings"])
    return findings


def base_lm(
    settings: ExtractionSettings, public_texts: Sequence[str]
) -> tuple[nn.Module, Vocab, tuple[str, ...]]:
    """The causal LM before any training, its vocabulary and its LoRA targets (every linear map, output
    layer included). The small GPT-2 uses MiniLM's WordPiece tokenizer cut to the public texts' tokens."""
    if settings.lm_model is None:
        vocab = CompactVocab.from_texts(load_tokenizer("minilm-l6"), public_texts)
        model = small_gpt2(vocab.size, layers=settings.layers, hidden=settings.hidden, seed=settings.seed)
        return model, vocab, GPT2_LORA_TARGETS
    model, vocab = load_language_model(settings.lm_model, causal=True, public_texts=public_texts)
    return model, vocab, GPT2_LORA_TARGETS if model.config.model_type == "gpt2" else linear_names(model)


def occurrences(sequences: Sequence[Sequence[int]], pattern: Sequence[int], max_length: int) -> int:
    """How many ``sequences`` contain ``pattern`` within their first ``max_length`` tokens (what trains).

    >>> occurrences([[1, 2, 3, 4], [2, 3], [3, 2]], [2, 3], max_length=3)
    2
    """
    k = len(pattern)
    pattern = list(pattern)
    return sum(
        any(list(s[i : i + k]) == pattern for i in range(min(len(s), max_length) - k + 1)) for s in sequences
    )


@dataclass
class ExtractionResult:
    """One row per model and canary (``table``), the training reports, the canaries."""

    table: pd.DataFrame
    reports: dict[str, TrainReport]
    canaries: list[Canary]
    space: int  # |R|: how many measurements the format allows
    settings: ExtractionSettings
    vocab_size: int
    n_public: int = 0
    n_private: int = 0
    parameters: int = 0  # of the causal LM (before LoRA)


def run_extraction(
    settings: ExtractionSettings = ExtractionSettings(), *, progress: Callable[[str], None] | None = None
) -> ExtractionResult:
    """Train the public, non-private and DP models and attack every canary with each (see the module)."""
    say = progress or (lambda _: None)
    fmt, pool = SecretFormat(), name_pool()
    canaries = make_canaries(
        repeats=settings.repeats, per_repeat=settings.per_repeat, seed=settings.seed, fmt=fmt, names=pool
    )
    secret_names = {c.name for c in canaries}
    public = public_corpus(settings, [n for n in pool if n not in secret_names])
    private = private_corpus(settings, canaries)
    model, vocab, targets = base_lm(settings, public + format_alphabet(fmt=fmt, names=pool))
    reports: dict[str, TrainReport] = {}
    if settings.pretrain.epochs:
        say("pretraining on public reports")
        reports[PRETRAINED] = train_lm(
            model, vocab.encode(public), loss=causal_loss, settings=settings.pretrain, pad_id=vocab.pad_id
        )
    models: list[tuple[str, float, nn.Module]] = [(PRETRAINED, math.nan, model)]
    sequences = vocab.encode(private)
    say("fine-tuning without DP")
    lora = with_lora(model, targets=targets, r=settings.lora_r, alpha=2 * settings.lora_r)
    reports[NON_PRIVATE] = train_lm(
        lora, sequences, loss=causal_loss, settings=settings.finetune, pad_id=vocab.pad_id
    )
    models.append((NON_PRIVATE, math.inf, lora))
    for eps in settings.epsilons:
        say(f"fine-tuning with DP at epsilon {eps:g}")
        dp_model = with_lora(model, targets=targets, r=settings.lora_r, alpha=2 * settings.lora_r)
        key = f"{PRIVATE} ε={eps:g}"
        reports[key] = train_lm(
            dp_model,
            sequences,
            loss=causal_loss,
            settings=replace(settings.dp, target_epsilon=eps),
            pad_id=vocab.pad_id,
        )
        models.append((PRIVATE, eps, dp_model))
    say("attacking the canaries")
    cands = encode_candidates(vocab, fmt)
    rows = []
    for c in canaries:
        seen = occurrences(sequences, vocab.encode([c.text], frame=False)[0], settings.finetune.max_length)
        for name, eps, m in models:
            res = attack_canary(m, vocab, c, samples=settings.samples, seed=settings.seed, candidates=cands)
            report = reports.get(f"{PRIVATE} ε={eps:g}") if name == PRIVATE else None
            rows.append(
                {
                    "model": name,
                    "epsilon": eps,
                    "repeats": c.repeats,
                    "in_training": seen,
                    "name": c.name,
                    "secret": c.secret_text,
                    "prefix": c.prefix,
                    "rank": res.rank,
                    "exposure": res.exposure,
                    "greedy_hit": res.greedy_hit,
                    "sampled_rate": res.sampled_rate,
                    "completion": res.completion,
                    "epsilon_rdp": report.epsilon.get("rdp") if report else math.nan,
                    "epsilon_prv": report.epsilon.get("prv") if report else math.nan,
                }
            )
    return ExtractionResult(
        table=pd.DataFrame(rows),
        reports=reports,
        canaries=canaries,
        space=fmt.size,
        settings=settings,
        vocab_size=vocab.size,
        n_public=len(public),
        n_private=len(private),
        parameters=sum(p.numel() for p in model.parameters()),
    )


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, ε and repetition count: canaries, greedy and sampled extraction rates, mean exposure and
    median rank.

    >>> t = pd.DataFrame({"model": ["m"] * 2, "epsilon": [1.0] * 2, "repeats": [4, 4],
    ...                   "greedy_hit": [True, False],
    ...                   "sampled_rate": [0.5, 0.0], "exposure": [10.0, 2.0], "rank": [1, 250]})
    >>> summarise(t).iloc[0].to_dict()["greedy_rate"]
    0.5
    """
    grouped = table.groupby(["model", "epsilon", "repeats"], dropna=False, sort=False)
    return grouped.agg(
        canaries=("rank", "size"),
        greedy_rate=("greedy_hit", "mean"),
        sampled_rate=("sampled_rate", "mean"),
        exposure=("exposure", "mean"),
        median_rank=("rank", "median"),
    ).reset_index()
