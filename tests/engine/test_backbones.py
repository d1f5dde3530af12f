"""Backbones other than BERT get the inputs their own forward expects, and hub models load offline.

Tiny random BERT, RoBERTa and DistilBERT built from transformers' config classes (no downloads): the
classifier's logits must equal those of the backbone called the standard way (token ids and attention mask
only), with padding in the batch, since RoBERTa counts positions from its padding index.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    RobertaConfig,
    RobertaModel,
)

from dpcore.config import ModelConfig
from dpcore.models import ModelNotFoundError, MultiLabelClassifier, add_lora, load_backbone, load_tokenizer

SIZE = {"vocab_size": 99, "max_position_embeddings": 40}


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "distilbert":
        return DistilBertModel(DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, **SIZE))
    layers = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**layers, **SIZE, pad_token_id=1), add_pooling_layer=False)
    return BertModel(BertConfig(**layers, **SIZE, type_vocab_size=2), add_pooling_layer=False)


def _batch(pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, pad, pad, pad], [14, 15, pad, pad, pad, pad]])
    return ids, (ids != pad).long()


def _standard_logits(model: MultiLabelClassifier, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    return model.head(model.norm((hidden * m).sum(1) / m.sum(1)))


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_logits_equal_the_backbone_called_the_standard_way(kind):
    backbone = _tiny(kind)
    model = MultiLabelClassifier(backbone, num_labels=3).eval()
    ids, mask = _batch(pad=backbone.config.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), _standard_logits(model, ids, mask))
    passed = model.ids.for_ids(ids)
    assert ("token_type_ids" in passed) is (kind != "distilbert")
    if kind == "roberta":  # positions start after the padding index; padding keeps it
        assert passed["position_ids"][1].tolist() == [2, 3, 4, 1, 1, 1]
    if "position_ids" in passed:
        assert passed["position_ids"].shape == ids.shape and passed["position_ids"].is_contiguous()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_frozen_features_and_lora_keep_the_standard_logits(kind):
    backbone = _tiny(kind)
    ids, mask = _batch(pad=backbone.config.pad_token_id)
    split = MultiLabelClassifier(backbone, num_labels=3, first_trainable=1).eval()
    with torch.no_grad():
        expected = _standard_logits(split, ids, mask)
        torch.testing.assert_close(split(split.frozen_features(ids, mask), mask), expected)
        # LoRA starts as the identity (B = 0): through PEFT's wrapper the inputs must be the same.
        wrapped = add_lora(backbone, ModelConfig(lora_targets=("query", "value")))
        lora = MultiLabelClassifier(wrapped, num_labels=3).eval()
        lora.head.load_state_dict(split.head.state_dict())
        torch.testing.assert_close(lora(ids, mask), expected)


def test_offline_hub_id_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_backbone("nobody/no-such-encoder")
    message = str(err.value)
    assert "'nobody/no-such-encoder'" in message and "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message and "hf download nobody/no-such-encoder" in message
    with pytest.raises(ModelNotFoundError, match="'nobody/no-such-encoder'"):
        load_tokenizer("nobody/no-such-encoder")


def test_offline_loads_pass_local_files_only(monkeypatch):
    import transformers

    seen = []

    def fake(path, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        raise OSError("not in the cache")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    for env, expected in (("1", True), ("", None)):
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", env)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        with pytest.raises(ModelNotFoundError):
            load_backbone("org/model")
        assert seen[-1] is expected


def test_a_missing_folder_is_not_sent_to_the_hub():
    with pytest.raises(ModelNotFoundError, match="model folder './models/mine' does not exist"):
        load_backbone("./models/mine")
