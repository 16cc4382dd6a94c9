"""Text reward model: a Hugging Face sequence classifier (backbone + scalar head).

``forward`` returns one reward per sequence, never a loss. The wrapped model is
a plain ``AutoModelForSequenceClassification`` (optionally with LoRA adapters),
so the saved checkpoint is one any transformers, TRL or OpenRLHF user can load.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from rewardlab.config import ModelConfig
from rewardlab.models.backbones import load_backbone

CONFIG_KEY = "rewardlab"  # our metadata lives under this key of config.json


class TextRewardModel(nn.Module):
    """Backbone + scalar head. ``forward(input_ids (N, L), attention_mask (N, L)) -> rewards (N,)``."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        logits = self.hf_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits  # (N, 1)
        return logits[:, 0].float()

    def _base(self) -> nn.Module:
        model = self.hf_model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Trainable ``(name, parameter)`` lists: ``backbone``, and ``head`` = everything outside the base model."""
        prefix = self._base().base_model_prefix
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "head": []}
        for name, p in self.hf_model.named_parameters():
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


def build_text_model(cfg: ModelConfig) -> tuple[TextRewardModel, object]:
    """Backbone from the registry, with LoRA when asked; returns (model, tokenizer)."""
    hf_model, tokenizer = load_backbone(cfg.backbone)
    if cfg.gradient_checkpointing:
        hf_model.gradient_checkpointing_enable()
    if cfg.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules or None)
        try:
            hf_model = get_peft_model(hf_model, lora)
        except ValueError as err:
            raise ValueError(f"LoRA could not adapt {cfg.backbone!r}: {err}; set model.lora_target_modules") from None
    return TextRewardModel(hf_model), tokenizer


def save_checkpoint(model: TextRewardModel, tokenizer, path: str | Path, metadata: dict,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Save a standard HF folder (safetensors) atomically: write to a temp dir, then rename.

    ``metadata`` (encoding spec, reward statistics, ...) goes into config.json under
    ``"rewardlab"``; ``extra_files`` maps file names to text written alongside.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        hf = model.merged_model()
        setattr(hf.config, CONFIG_KEY, metadata)
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict:
    """The ``rewardlab`` block of a checkpoint's config.json ({} for foreign models)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return {}
    return json.loads(config.read_text()).get(CONFIG_KEY) or {}
