"""Canaries and what a causal LM does with them: the secret format, exposure, scoring and decoding.

Canaries (Carlini et al., "The Secret Sharer", 2019) are sentences of a public format,
``Patient {name} has a nodule measuring {A} x {B} mm, first seen {date}.``, whose measurement ``A x B`` is the
secret. A model is prompted with a canary's prefix (``Patient {name} has a nodule measuring``). Measured:

- **extraction**: whether greedy decoding completes the secret, and the fraction of samples (temperature 1)
  that do;
- **exposure**: ``log2 |R| - log2 rank``, where the rank is the true secret's place among all ``|R|``
  measurements of the format ordered by the model's log-perplexity (1 = most likely). A model that knows
  nothing ranks the secret uniformly at random (exposure 1 bit at the median, about 1/ln 2 = 1.44 bits on
  average); a model that memorised it ranks it first (exposure ``log2 |R|``).

The experiment is :func:`dpcore.attacks.extraction.run_extraction`.

>>> exposure(rank=1, space=1024), exposure(rank=512, space=1024)
(10.0, 1.0)
>>> fmt = SecretFormat(low=5, high=40)
>>> fmt.size, fmt.render((24, 17))
(1296, '24 x 17')
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dpcore.attacks.lm import Vocab

SYLLABLES = (
    "ka",
    "lo",
    "dor",
    "vel",
    "mar",
    "in",
    "os",
    "gro",
    "tu",
    "sen",
    "hal",
    "vik",
    "be",
    "ra",
    "nu",
    "pel",
    "stra",
    "mo",
    "ji",
    "ren",
)


def name_pool(*, size: int = 256, seed: int = 0) -> list[str]:
    """Distinct made-up surnames (three syllables): the public list that canary names are drawn from.

    >>> name_pool(size=3)
    ['Beralo', 'Tustrapel', 'Besenpel']
    """
    rng = random.Random(seed)
    names: dict[str, None] = {}
    while len(names) < size:
        names["".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()] = None
    return list(names)


def exposure(*, rank: int, space: int) -> float:
    """Exposure of a secret ranked ``rank`` (1 = the model's most likely) among ``space`` candidates."""
    if not 1 <= rank <= space:
        raise ValueError(f"rank must be between 1 and the space size {space}, got {rank}")
    return math.log2(space) - math.log2(rank)


def rank_of(scores: torch.Tensor, index: int) -> int:
    """Rank of candidate ``index`` by ``scores`` (log-probabilities, higher is likelier): one plus the number
    of candidates strictly likelier. Ties count in the secret's favour, as a guessing attacker would not.

    >>> rank_of(torch.tensor([-1.0, -3.0, -2.0, -0.5]), 2)
    3
    """
    return 1 + int((scores > scores[index]).sum())


@dataclass(frozen=True)
class SecretFormat:
    """Measurements ``A x B`` (mm) with A and B integers in ``[low, high]``: the canaries' secret space."""

    low: int = 5
    high: int = 40

    @property
    def values(self) -> list[tuple[int, int]]:
        return [(a, b) for a in range(self.low, self.high + 1) for b in range(self.low, self.high + 1)]

    @property
    def size(self) -> int:
        return (self.high - self.low + 1) ** 2

    def render(self, value: tuple[int, int]) -> str:
        return f"{value[0]} x {value[1]}"

    def draw(self, rng: random.Random) -> tuple[int, int]:
        return (rng.randint(self.low, self.high), rng.randint(self.low, self.high))


@dataclass(frozen=True)
class Canary:
    """One patient's planted detail: ``name``'s nodule of ``secret`` mm, first seen on ``date``."""

    name: str
    secret: tuple[int, int]
    date: str
    repeats: int  # times planted in the private training reports (0: a control, never planted)
    fmt: SecretFormat = SecretFormat()

    @property
    def prefix(self) -> str:
        return f"Patient {self.name} has a nodule measuring"

    @property
    def secret_text(self) -> str:
        return self.fmt.render(self.secret)

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret_text} mm, first seen {self.date}."


def draw_date(rng: random.Random) -> str:
    return f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2011, 2019)}"


def make_canaries(
    *,
    repeats: Sequence[int] = (0, 1, 4, 16),
    per_repeat: int = 4,
    seed: int = 0,
    fmt: SecretFormat = SecretFormat(),
    names: Sequence[str] | None = None,
) -> list[Canary]:
    """``per_repeat`` canaries for each repetition count, with distinct names and random secrets and dates.

    >>> [(c.repeats, c.secret_text) for c in make_canaries(repeats=(1, 16), per_repeat=1)]
    [(1, '7 x 21'), (16, '24 x 35')]
    """
    rng = random.Random(seed)
    pool = list(names) if names is not None else name_pool()
    chosen = rng.sample(pool, len(repeats) * per_repeat)
    return [
        Canary(name=chosen[i * per_repeat + j], secret=fmt.draw(rng), date=draw_date(rng), repeats=r, fmt=fmt)
        for i, r in enumerate(repeats)
        for j in range(per_repeat)
    ]


def format_alphabet(*, fmt: SecretFormat = SecretFormat(), names: Sequence[str] | None = None) -> list[str]:
    """Texts that hold every token the canary format can take (all names of the public pool, every
    measurement and date part): added to the public text a :class:`~dpcore.attacks.lm.CompactVocab` is
    built from, so that no secret is out of vocabulary."""
    pool = list(names) if names is not None else name_pool()
    numbers = " ".join(str(v) for v in range(fmt.low, fmt.high + 1))
    dates = " ".join([f"{d:02d}" for d in range(1, 29)] + [str(y) for y in range(2011, 2020)] + ["/"])
    example = Canary(name=pool[0], secret=(fmt.low, fmt.high), date="01/01/2011", repeats=0, fmt=fmt)
    names_text = [" ".join(pool[i : i + 32]) for i in range(0, len(pool), 32)]  # within a tokenizer's limit
    return [example.text, *names_text, numbers, dates]


# -- scoring and decoding ----------------------------------------------------------------------------------
@torch.no_grad()
def candidate_logprobs(
    model: nn.Module, prefix: Sequence[int], candidates: Sequence[Sequence[int]], *, batch_size: int = 256
) -> torch.Tensor:
    """Log-probability of each candidate continuation of ``prefix`` (token ids), ``[C]``.

    Candidates that share all but their last token share one forward pass: the pass over ``prefix + stem``
    gives the stem's log-probability and, at its last position, that of every possible last token (for
    ``A x B``, 36 passes score all 1,296 candidates).
    """
    stems: dict[tuple[int, ...], list[int]] = {}
    for i, cand in enumerate(candidates):
        if not cand:
            raise ValueError("empty candidate")
        stems.setdefault(tuple(cand[:-1]), []).append(i)
    out = torch.empty(len(candidates))
    keys = list(stems)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        seqs = [list(prefix) + list(stem) for stem in chunk]
        length = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        p = len(prefix)
        for r, stem in enumerate(chunk):
            members = stems[stem]
            stem_lp = logp[r, p - 1 + torch.arange(len(stem)), list(stem)].sum() if stem else 0.0
            last = torch.tensor([candidates[i][-1] for i in members])
            out[members] = stem_lp + logp[r, p - 1 + len(stem), last]
    return out


@torch.no_grad()
def complete(
    model: nn.Module,
    prefix: Sequence[int],
    *,
    tokens: int,
    samples: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``tokens`` tokens after ``prefix``: greedy (``samples`` 0, one row) or ``samples`` rows drawn at
    temperature 1. Returns the continuation ids ``[rows, tokens]``."""
    rows = max(1, samples)
    ids = torch.tensor([list(prefix)] * rows, dtype=torch.long)
    for _ in range(tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
        if samples:
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        else:
            nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, len(prefix) :]


@dataclass(frozen=True)
class CanaryResult:
    """What one model does with one canary's prefix."""

    rank: int
    exposure: float
    greedy_hit: bool  # greedy decoding's first tokens are the secret
    sampled_rate: float  # fraction of samples whose first tokens are the secret
    completion: str  # the greedy continuation, decoded (canaries are synthetic: safe to show)


def encode_candidates(vocab: Vocab, fmt: SecretFormat) -> list[list[int]]:
    """Token ids of every secret of ``fmt``, in the order of ``fmt.values`` (encode once, attack many).

    Each is encoded after a space, as it follows the prefix: byte-level BPE (GPT-2's own tokenizer) encodes a
    word after a space differently; WordPiece ignores the space.
    """
    return vocab.encode([" " + fmt.render(v) for v in fmt.values], frame=False)


def attack_canary(
    model: nn.Module,
    vocab: Vocab,
    canary: Canary,
    *,
    samples: int = 32,
    extra_tokens: int = 8,
    seed: int = 0,
    candidates: list[list[int]] | None = None,
) -> CanaryResult:
    """Rank, exposure and extraction of ``canary``'s secret by ``model`` prompted with its prefix
    (``candidates``: :func:`encode_candidates` of its format, when already at hand)."""
    model.eval()
    prefix = vocab.encode([canary.prefix])[0][:-1]  # [CLS] prefix (without the closing [SEP])
    values = canary.fmt.values
    cands = candidates if candidates is not None else encode_candidates(vocab, canary.fmt)
    truth = cands[values.index(canary.secret)]
    rank = rank_of(candidate_logprobs(model, prefix, cands), values.index(canary.secret))
    greedy = complete(model, prefix, tokens=len(truth) + extra_tokens)[0]
    generator = torch.Generator().manual_seed(seed)
    sampled = (
        complete(model, prefix, tokens=len(truth), samples=samples, generator=generator) if samples else None
    )
    target = torch.tensor(truth)
    return CanaryResult(
        rank=rank,
        exposure=exposure(rank=rank, space=len(values)),
        greedy_hit=bool(torch.equal(greedy[: len(truth)], target)),
        sampled_rate=float((sampled == target).all(1).float().mean()) if sampled is not None else math.nan,
        completion=vocab.decode(greedy.tolist()),
    )
