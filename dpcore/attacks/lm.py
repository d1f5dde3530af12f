"""Small language models for the memorisation demonstrations: vocabularies, models, LoRA, per-example losses.

The attack chapters train a causal LM (report completion) and a masked LM (Findings reconstruction) on a
laptop CPU. Both use the packaged MiniLM WordPiece tokenizer, cut down to the tokens a *public* text uses
(:class:`CompactVocab`): the output layer of a language model costs one row per vocabulary entry, and a
synthetic report corpus needs about a thousand of MiniLM's 30,522. A model loaded from a folder or hub id
(:func:`load_language_model`) is cut the same way when its tokenizer is BERT-style, and otherwise keeps its
tokenizer whole (:class:`TokenizerVocab`).

The per-example losses here (``[B]``: one mean token loss per sequence) are what
:func:`dpcore.attacks.lm_train.train_lm` trains with, with or without DP.

>>> from dpcore.models import load_tokenizer
>>> vocab = CompactVocab.from_texts(load_tokenizer("minilm-l6"), ["No pleural effusion."])
>>> vocab.decode(vocab.encode(["no effusion"])[0])
'no effusion'
>>> vocab.decode(vocab.encode(["no edema"])[0])  # "ed ##ema" is not in the public text
'no [UNK] [UNK]'
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from dpcore.models import load_tokenizer, quiet_checkpointing_deprecation, resolve_model_path

# A per-example loss: (model, token ids [B, L], attention mask [B, L]) -> loss per sequence [B].
PerExampleLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class CompactVocab:
    """A tokenizer restricted to the token ids of some texts (plus its special tokens); others map to UNK.

    Sequences are framed as ``[CLS] tokens [SEP]``: the causal LM reads ``[CLS]`` as beginning of text and
    learns to end with ``[SEP]``; the masked LM sees BERT's usual frame.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, kept: Iterable[int]) -> None:
        specials = [
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.mask_token_id,
        ]
        if any(s is None for s in specials):
            raise ValueError(
                "CompactVocab needs a tokenizer with pad, unk, cls, sep and mask tokens (BERT-style)"
            )
        self.tokenizer = tokenizer
        self.full_ids: list[int] = list(dict.fromkeys([*specials, *sorted(set(kept) - set(specials))]))
        self.index = {t: i for i, t in enumerate(self.full_ids)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id = range(5)

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> CompactVocab:
        """The vocabulary of ``texts`` (which must be public: the vocabulary is released with the model)."""
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return cls(tokenizer, (t for row in ids for t in row))

    @property
    def size(self) -> int:
        return len(self.full_ids)

    def encode(self, texts: Sequence[str], *, frame: bool = True) -> list[list[int]]:
        """Compact ids of each text, framed by ``[CLS]`` and ``[SEP]`` unless ``frame`` is false."""
        rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        out = [[self.index.get(t, self.unk_id) for t in row] for row in rows]
        return [[self.bos_id, *row, self.eos_id] for row in out] if frame else out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of compact ids; frame and padding tokens are dropped, unknown ones shown as ``[UNK]``."""
        drop = {self.pad_id, self.bos_id, self.eos_id}
        full = [self.full_ids[i] for i in ids if i not in drop]
        return self.tokenizer.decode(full, clean_up_tokenization_spaces=True)


class TokenizerVocab:
    """A model's own tokenizer, whole: for a causal or masked LM loaded from a folder or hub id."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        t = tokenizer
        self.bos_id = t.cls_token_id if t.cls_token_id is not None else t.bos_token_id
        self.eos_id = t.sep_token_id if t.sep_token_id is not None else t.eos_token_id
        self.pad_id = t.pad_token_id if t.pad_token_id is not None else self.eos_id
        self.unk_id, self.mask_id = t.unk_token_id, t.mask_token_id
        self.size = len(tokenizer)

    def encode(self, texts: Sequence[str], *, frame: bool = True) -> list[list[int]]:
        rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        frame_ids = [i for i in (self.bos_id, self.eos_id) if i is not None]
        if not frame or len(frame_ids) < 2:
            return [list(r) for r in rows]
        return [[self.bos_id, *r, self.eos_id] for r in rows]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)


Vocab = CompactVocab | TokenizerVocab


def small_gpt2(
    vocab_size: int,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    positions: int = 256,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised GPT-2 (``transformers``) small enough to train on a laptop CPU in seconds."""

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=positions,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=4 * hidden,
        activation_function="gelu",  # exact GELU: the tanh approximation (gelu_new) is slower on CPU
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


def small_masked_lm(
    vocab_size: int,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    positions: int = 256,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised DeBERTa-v2 encoder with its masked-LM head (decoder tied to the input
    embeddings), small enough to pretrain on a laptop CPU in seconds.

    DeBERTa's relative-position attention, not BERT's learned absolute positions: from scratch at this size a
    BERT stays near the unigram loss for hundreds of steps, while DeBERTa soon learns to read the neighbouring
    words (measured on 600 public reports, 40% masking: after 6 epochs BERT's loss is 4.8 and it recovers 13%
    of masked tokens, DeBERTa's is 4.1; after 12 epochs DeBERTa's is 2.4 and it recovers 63%).
    """

    torch.manual_seed(seed)
    config = DebertaV2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=positions,
        pad_token_id=0,
        relative_attention=True,
        position_buckets=32,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
    )
    return DebertaV2ForMaskedLM(config)


def linear_names(model: nn.Module) -> tuple[str, ...]:
    """The distinct last names of ``model``'s ``nn.Linear`` modules: LoRA targets for every linear map,
    output layer included.

    >>> linear_names(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    ('0',)
    """
    return tuple(
        sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    )


def with_lora(model: PreTrainedModel, *, targets: Sequence[str], r: int = 8, alpha: int = 16) -> PeftModel:
    """A copy of ``model`` with LoRA adapters (PEFT) on ``targets``; only the adapters train."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none")
    with quiet_checkpointing_deprecation(), warnings.catch_warnings():
        # PEFT notes that GPT-2's Conv1D layers store weights transposed (it adapts), and that LoRA on a tied
        # output layer leaves the input embeddings as they are (intended: the adapter is separate).
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True`")
        return get_peft_model(copy.deepcopy(model), config)


def pad(rows: Sequence[Sequence[int]], *, pad_id: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[N, L]`` (rows cut to ``max_length``) and their attention mask.

    >>> ids, mask = pad([[5, 6, 7], [8]], pad_id=0, max_length=2)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [8, 0]], [[1, 1], [1, 0]])
    """
    length = min(max_length, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def causal_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, ``[B]`` (padding excluded)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets, keep = ids[:, 1:], mask[:, 1:].to(logits.dtype)
    tokens = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (tokens * keep).sum(1) / keep.sum(1).clamp(min=1.0)


@dataclass
class MaskedLoss:
    """Masked-LM loss per sequence, ``[B]``: ``rate`` of each sequence's real tokens (at least one) are
    replaced by ``[MASK]`` and predicted. The masking draws from its own generator, never from the data."""

    mask_id: int
    rate: float = 0.15
    seed: int = 0
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        chosen = choose_positions(mask, self.rate, self.generator)
        inputs = ids.masked_fill(chosen, self.mask_id)
        logits = model(input_ids=inputs, attention_mask=mask).logits
        tokens = nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
        weight = chosen.to(tokens.dtype)
        return (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)


def choose_positions(mask: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A boolean ``[B, L]``: about ``rate`` of each row's inner tokens (not the frame, not padding), and at
    least one when the row has any.

    >>> m = torch.tensor([[1, 1, 1, 1, 1, 0]])
    >>> choose_positions(m, 1.0, torch.Generator().manual_seed(0)).int().tolist()
    [[0, 1, 1, 1, 0, 0]]
    """
    inner = mask.bool().clone()
    inner[:, 0] = False  # [CLS] / beginning of text
    inner[torch.arange(len(mask)), (mask.sum(1) - 1).clamp(min=0)] = False  # [SEP]
    scores = torch.rand(mask.shape, generator=generator).masked_fill(~inner, 2.0)
    chosen = (scores < rate) & inner
    first = scores.argmin(1)  # the lowest score of each row is always chosen, so no row is left out
    chosen[torch.arange(len(mask)), first] |= inner[torch.arange(len(mask)), first]
    return chosen


def vocab_for(tokenizer: PreTrainedTokenizerBase, public_texts: Sequence[str]) -> Vocab:
    """A :class:`CompactVocab` of ``public_texts`` when the tokenizer is BERT-style (it has pad, unk, cls,
    sep and mask tokens), else the tokenizer whole (:class:`TokenizerVocab`)."""
    special = (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    )
    if any(t is None for t in special):
        return TokenizerVocab(tokenizer)
    return CompactVocab.from_texts(tokenizer, public_texts)


@torch.no_grad()
def restrict_vocab(model: PreTrainedModel, vocab: CompactVocab) -> PreTrainedModel:
    """``model`` with its input and output embeddings cut to the rows of ``vocab`` (in its order), in place.

    A pretrained model keeps what it knows of the kept tokens; its output layer, the costliest part of a
    small language model over a 30,522-token vocabulary, shrinks to the tokens the public text uses.
    """
    rows = torch.tensor(vocab.full_ids)
    old_in, old_out = model.get_input_embeddings(), model.get_output_embeddings()
    new_in = nn.Embedding(len(rows), old_in.embedding_dim, padding_idx=vocab.pad_id)
    new_in.weight.copy_(old_in.weight[rows])
    model.set_input_embeddings(new_in)
    if old_out is not None:
        new_out = nn.Linear(old_out.in_features, len(rows), bias=old_out.bias is not None)
        tied = old_out.weight is old_in.weight
        new_out.weight = new_in.weight if tied else nn.Parameter(old_out.weight[rows].clone())
        if old_out.bias is not None:
            new_out.bias.copy_(old_out.bias[rows])
        model.set_output_embeddings(new_out)
    model.config.vocab_size = len(rows)
    return model


def load_language_model(
    name: str, *, causal: bool, public_texts: Sequence[str]
) -> tuple[PreTrainedModel, Vocab]:
    """A causal or masked LM from a folder or hub id (``transformers``' auto classes; a missing head starts
    untrained), with its vocabulary, cut to ``public_texts``' tokens when its tokenizer is BERT-style."""

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # an encoder folder has no head: expected, it learns on public text
    hf_logging.disable_progress_bar()
    try:
        auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
        model = auto.from_pretrained(resolve_model_path(name))
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    vocab = vocab_for(load_tokenizer(name), public_texts)
    if isinstance(vocab, CompactVocab):
        restrict_vocab(model, vocab)
    return model, vocab
