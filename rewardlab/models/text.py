"""Text reward models: a Hugging Face sequence classifier (backbone + linear head), one or several heads.

With no attributes the model is a plain ``AutoModelForSequenceClassification``
with ``num_labels=1`` (optionally with LoRA adapters), so the saved checkpoint is
one any transformers, TRL or OpenRLHF user can load. With attributes A it has
``num_labels=A`` (``id2label`` names them) and an aggregate column: a weighted
sum of the heads whose weights are saved in ``config.json``, so a transformers
user can recompute it from the logits.

A loaded model scores the whole text up to the backbone's position limit, as
``tokenizer(text, truncation=True)`` with the saved tokenizer does (see
:mod:`rewardlab.data.encode`); a decoder's folder also carries the training reward
``mean`` / ``std`` at the top of ``config.json``, where OpenRLHF's reward model reads them.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rewardlab.config import ExperimentConfig, ModelConfig
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.models.backbones import (load_backbone, load_tokenizer, position_limit, prepare_tokenizer,
                                        save_tokenizer, with_lora)
from rewardlab.models.base import AGGREGATE, CONFIG_KEY, ModelKind, RewardNet, read_metadata


class Aggregator(nn.Module):
    """Weights over A attribute heads: fixed (mean or user weights) or learned (softmax of free logits).

    ``forward(heads (N, A)) -> (N,)``.
    """

    def __init__(self, weights: Sequence[float], learned: bool = False):
        super().__init__()
        w = torch.tensor(list(weights), dtype=torch.float32)
        w = w / w.sum()
        if learned:
            self.logits = nn.Parameter(w.log())
        else:
            self.register_buffer("fixed", w)

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(-1) if hasattr(self, "logits") else self.fixed

    def forward(self, heads: torch.Tensor) -> torch.Tensor:
        return heads @ self.weights.to(heads.dtype)


def aggregate_weights(cfg: ModelConfig, attributes: Sequence[str]) -> list[float]:
    """Initial aggregate weights from ``model.aggregate`` / ``model.aggregate_weights``."""
    if cfg.aggregate != "weighted":
        return [1.0] * len(attributes)
    unknown = sorted(set(cfg.aggregate_weights) - set(attributes))
    if unknown:
        raise ValueError(f"model.aggregate_weights names {unknown[0]!r}, which is not an attribute; "
                         f"attributes: {', '.join(attributes)}")
    weights = [float(cfg.aggregate_weights.get(a, 0.0)) for a in attributes]
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"model.aggregate_weights={cfg.aggregate_weights!r}: weights must be >= 0 and not all 0")
    return weights


class TextRewardModel(RewardNet):
    """Backbone + linear head(s). ``forward(input_ids (N, L), attention_mask (N, L)) -> rewards (N, H)``.

    H = 1 for a plain reward model; A + 1 (the A attributes, then the aggregate) otherwise.
    """

    def __init__(self, hf_model: nn.Module, attributes: Sequence[str] = (), aggregator: Aggregator | None = None):
        super().__init__()
        self.hf_model = hf_model
        self.attributes = tuple(attributes)
        self.heads = (*self.attributes, AGGREGATE) if self.attributes else ("reward",)
        self.aggregator = aggregator if self.attributes else None
        if self.attributes and aggregator is None:
            self.aggregator = Aggregator([1.0] * len(self.attributes))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                last_index: torch.Tensor | None = None) -> torch.Tensor:
        if last_index is not None:  # packed: (1, T) tokens, one reward per sequence
            logits = self._packed_logits(input_ids, position_ids, last_index)
        else:
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            logits = self.hf_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits  # (N, A|1)
        logits = logits.float()
        if self.aggregator is None:
            return logits
        aggregate = self.aggregator(logits)  # (N,), or (N, 3) for three-logit heads
        return torch.cat([logits, aggregate if aggregate.dim() == 2 else aggregate[:, None]], dim=1)  # (N, A + 1)

    def _packed_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor, last_index: torch.Tensor
                       ) -> torch.Tensor:
        """Run the decoder on packed sequences (no attention mask: the position ids mark the boundaries) and
        apply the scoring head to each sequence's last token: (1, T) -> (N, A|1)."""
        base = self._base()
        decoder = getattr(base, base.base_model_prefix)
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state  # (1, T, D)
        return base.score(hidden[0, last_index])

    def _base(self) -> nn.Module:
        model = self.hf_model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def head_layer(self) -> nn.Module:
        """The sequence classifier's output projection (``score`` of decoders, ``classifier`` of BERT-likes)."""
        base = self._base()
        for name in ("score", "classifier"):
            layer = getattr(base, name, None)
            if layer is not None:
                return getattr(layer, "out_proj", layer)  # RoBERTa / DeBERTa heads end in out_proj
        raise NotImplementedError(f"{type(base).__name__} has no score / classifier layer to personalise")

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``backbone`` (or its LoRA adapters), and ``head`` = everything outside the base model."""
        prefix = self._base().base_model_prefix
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "head": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                inside = f".{prefix}." in f".{name}" and "modules_to_save" not in name
                groups["backbone" if inside else "head"].append((name, p))
        return groups

    @property
    def config(self):
        return self._base().config

    def merged_model(self) -> nn.Module:
        """A plain transformers model with any LoRA adapters merged in (a copy; training state untouched)."""
        if hasattr(self.hf_model, "merge_and_unload"):
            return copy.deepcopy(self.hf_model).merge_and_unload()
        return self.hf_model


PACKABLE = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "olmo", "olmo2", "granite")


def check_packable(hf_model: nn.Module, backbone: str) -> None:
    """Packing needs a decoder whose attention reads sequence boundaries from position ids and a ``score`` head."""
    model_type = getattr(hf_model.config, "model_type", "?")
    if model_type not in PACKABLE or not hasattr(hf_model, "score"):
        raise ValueError(f"model.packing: {backbone!r} is a {model_type!r} model; padding-free packing works for "
                         f"decoders of these types: {', '.join(PACKABLE)}. Set model.packing=false")


def build_text_model(cfg: ModelConfig, attributes: Sequence[str] = (), vocab_size: int | None = None,
                     tokenizer=None) -> tuple[TextRewardModel, object]:
    """Backbone from the registry (one output per attribute, or one), with LoRA when asked; (model, tokenizer).

    ``vocab_size`` larger than the backbone's (tokens added to the tokenizer, e.g. labeler tokens) grows
    the input embeddings, whose new rows then train with the model (with LoRA too).
    """
    hf_model, tokenizer = load_backbone(cfg.backbone, num_labels=max(1, len(attributes)),
                                        dropout=cfg.dropout, tokenizer=tokenizer)
    grown = vocab_size is not None and vocab_size > hf_model.get_input_embeddings().weight.shape[0]
    if grown:
        hf_model.resize_token_embeddings(vocab_size)
    if cfg.packing:
        check_packable(hf_model, cfg.backbone)
    if cfg.gradient_checkpointing:
        hf_model.gradient_checkpointing_enable()
    if cfg.lora:
        hf_model = with_lora(hf_model, cfg, "SEQ_CLS")
        if grown:  # the added tokens' embeddings must learn: train the input embedding matrix too
            hf_model.get_input_embeddings().weight.requires_grad_(True)
    aggregator = Aggregator(aggregate_weights(cfg, attributes), learned=cfg.aggregate == "learned") \
        if attributes else None
    return TextRewardModel(hf_model, attributes, aggregator), tokenizer


# ----------------------------------------------------------------------------- the "text" kind


def _processor(cfg: ExperimentConfig) -> TextItems:
    tokenizer = load_tokenizer(cfg.model.backbone)
    return TextItems(TextEncoder(tokenizer, EncodingSpec.from_data_config(cfg.data, auto="concat")),
                     packing=cfg.model.packing, pad_to_multiple_of=cfg.train.pad_to_multiple_of)


def _build(cfg: ExperimentConfig, attributes: Sequence[str], processor: TextItems) -> TextRewardModel:
    model, _ = build_text_model(cfg.model, attributes, vocab_size=len(processor.tokenizer),
                                tokenizer=processor.tokenizer)
    return model


def inference_spec(spec: EncodingSpec, hf_config, tokenizer, metadata: dict) -> EncodingSpec:
    """``spec`` with the longest text scoring reads, where it is not recorded yet: the backbone's position limit,
    less the labeler token a ``tokens``-personalised model puts in front of the text."""
    if spec.inference_max_length is not None:
        return spec
    limit = position_limit(hf_config, tokenizer)
    if limit is not None and metadata.get("personalization", {}).get("mode") == "tokens":
        limit -= 1
    return dataclasses.replace(spec, inference_max_length=limit)


def reads_last_token(hf_model: nn.Module) -> bool:
    """Whether the classifier is a decoder's: a bias-free ``score`` layer read at the last real token, the head
    OpenRLHF's reward model loads (an encoder's ``classifier`` reads [CLS])."""
    score = getattr(hf_model, "score", None)
    return isinstance(score, nn.Linear) and score.bias is None


def _save(model: TextRewardModel, processor: TextItems, folder: Path, metadata: dict) -> None:
    hf = model.merged_model()
    spec = inference_spec(processor.encoder.spec, hf.config, processor.tokenizer, metadata)
    metadata = {**metadata, "encoding": spec.to_dict()}
    if model.attributes:
        metadata["attributes"] = list(model.attributes)
        metadata["aggregate_weights"] = model.aggregator.weights.tolist()
        hf.config.id2label = dict(enumerate(model.attributes))
        hf.config.label2id = {a: i for i, a in enumerate(model.attributes)}
    elif reads_last_token(hf) and "reward_mean" in metadata:
        # OpenRLHF's reward model takes these from the top of config.json: (r - mean) / std with normalize_reward
        hf.config.mean, hf.config.std = metadata["reward_mean"], metadata["reward_std"]
        hf.config.value_head_prefix = "score"  # where OpenRLHF finds the head (the name it has here)
    setattr(hf.config, CONFIG_KEY, metadata)
    hf.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(processor.tokenizer, folder, spec.inference_max_length)


def _load(path: str, device: torch.device, dtype: torch.dtype | None) -> tuple[TextRewardModel, TextItems, dict]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=dtype)
    metadata = read_metadata(path) or dict(getattr(hf.config, CONFIG_KEY, None) or {})
    attributes = metadata.get("attributes", [])
    if hf.config.num_labels != max(1, len(attributes)):
        expected = f"num_labels={len(attributes)} (one per attribute)" if attributes else "num_labels=1"
        raise ValueError(f"{path}: a reward model has {expected}, this one has {hf.config.num_labels}")
    prepare_tokenizer(tokenizer, hf)
    aggregator = Aggregator(metadata["aggregate_weights"]) if attributes else None
    spec = EncodingSpec(**metadata["encoding"]) if "encoding" in metadata else EncodingSpec(
        max_length=min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
    # a folder saved before the inference limit was recorded (or a foreign model) reads up to its backbone's limit
    spec = inference_spec(spec, hf.config, tokenizer, metadata)
    model = TextRewardModel(hf, attributes, aggregator).to(device).eval()
    return model, TextItems(TextEncoder(tokenizer, spec, inference=True)), metadata


TEXT_KIND = ModelKind(name="text", processor=_processor, build=_build, save=_save, load=_load,
                      help="Hugging Face sequence classifier (encoder or decoder), one head or one per attribute; "
                           "saved as a plain AutoModelForSequenceClassification folder.")
