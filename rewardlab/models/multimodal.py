"""Multimodal reward models: (text prompt, image) → one reward per attribute and an aggregate.

Model = towers (image + text, :mod:`rewardlab.models.towers`) → fusion →
heads (:mod:`rewardlab.models.fusion`). The towers are trained one of three ways
(``multimodal.freeze_towers``, ``model.lora``):

- **frozen** (default): only fusion and heads learn; tower outputs are computed once
  and cached on disk (``multimodal.cache``), so an epoch costs a fusion pass only;
- **lora**: PEFT LoRA adapters on the towers' attention projections (text: BERT
  query/value, CLIP/SigLIP q_proj/v_proj in both towers) and, for EfficientNet, on
  its 1×1 (pointwise) convolutions — the bulk of its weights; its depthwise
  convolutions, stem and BatchNorm stay frozen;
- **full**: every tower weight is fine-tuned (``train.lr_backbone``).

BatchNorm statistics of the image tower always stay at their pretrained values
(reward-model batches are small and would only corrupt them).

A checkpoint folder holds ``config.json`` (our metadata under ``"rewardlab"``: kind,
heads, attributes, backbone reference, fusion settings, aggregate, preprocessing),
``model.safetensors`` (fusion and heads, plus the trained tower weights: LoRA
adapters or all tower weights; nothing of frozen towers, which the backbone
reference rebuilds) and the tokenizer files. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rewardlab.config import ExperimentConfig
from rewardlab.models.base import AGGREGATE, CONFIG_KEY, ModelKind, RewardNet, read_metadata
from rewardlab.models.fusion import (GateAggregator, RewardHeads, build_aggregator, build_fusion, grid_positions,
                                     pool_grid_tokens, pooled_grid)
from rewardlab.models.image_items import ImageTextItems, ItemSpec, default_cache_dir
from rewardlab.models.text import aggregate_weights
from rewardlab.models.towers import Towers, load_towers

TOWER_MODES = ("frozen", "lora", "full")


class MultimodalRewardModel(RewardNet):
    """Towers + fusion + heads. ``forward(**items) -> rewards (N, A + 1)`` ((N, 1) without attributes).

    ``items`` hold, for each side, either tower inputs (``pixels_<size>`` per scale; ``input_ids``,
    ``attention_mask``) or cached tower outputs (``image_tokens``, ``image_pooled``; ``text_tokens``,
    ``text_mask``, ``text_pooled``), as :class:`~rewardlab.models.image_items.ImageTextItems` collates them.
    """

    def __init__(self, towers: Towers, fusion: nn.Module, head: RewardHeads, aggregator: nn.Module | None,
                 attributes: Sequence[str], scales: Sequence[int], *, tower_mode: str = "frozen",
                 fusion_config: dict | None = None, aggregate: str = "mean", lora: dict | None = None):
        super().__init__()
        self.towers, self.fusion, self.head, self.aggregator = towers, fusion, head, aggregator
        self.attributes = tuple(attributes)
        self.heads = (*self.attributes, AGGREGATE) if self.attributes else ("reward",)
        self.scales = tuple(sorted(scales))
        self.tower_mode, self.fusion_config, self.aggregate, self.lora = tower_mode, fusion_config or {}, aggregate, lora
        self.grids = [towers.grid(s) for s in self.scales]
        self.token_pool = int(self.fusion_config.get("token_pool", 1))  # absent in older checkpoints: no pooling
        self.register_buffer("image_positions", grid_positions([pooled_grid(g, self.token_pool) for g in self.grids]),
                             persistent=False)  # (T, 4) after pooling

    def _image(self, items: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "image_tokens" in items:
            return items["image_tokens"], items["image_pooled"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.tower_mode != "frozen"):
            return self.towers.encode_images({s: items[f"pixels_{s}"] for s in self.scales})

    def _text(self, items: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if "text_tokens" in items:
            return items["text_tokens"], items["text_mask"], items["text_pooled"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.tower_mode != "frozen"):
            tokens, pooled = self.towers.encode_text(items["input_ids"], items["attention_mask"])
        return tokens, items["attention_mask"], pooled

    def forward(self, **items: torch.Tensor) -> torch.Tensor:
        image_tokens, image_pooled = self._image(items)  # (N, T, Di), (N, Pi)
        text_tokens, text_mask, text_pooled = self._text(items)  # (N, L, Dt), (N, L), (N, Pt)
        expected = sum(h * w + prefix for h, w, prefix in self.grids)
        if image_tokens.shape[1] != expected:
            raise ValueError(f"got {image_tokens.shape[1]} image tokens per item, but scales {self.scales} of "
                             f"{self.towers.name} make {expected}: were the cached features computed with other "
                             "settings?")
        image_tokens = pool_grid_tokens(image_tokens, self.grids, self.token_pool)  # (N, T', Di)
        dtype = self.head.out.weight.dtype
        fused = self.fusion(image_tokens.to(dtype), self.image_positions.to(dtype), image_pooled.to(dtype),
                            text_tokens.to(dtype), text_mask, text_pooled.to(dtype))  # (N, H)
        rewards = self.head(fused).float()  # (N, A | 1)
        if self.aggregator is None:
            return rewards
        overall = self.aggregator(rewards, fused) if isinstance(self.aggregator, GateAggregator) \
            else self.aggregator(rewards)
        return torch.cat([rewards, overall.float()[:, None]], dim=1)  # (N, A + 1)

    def head_layer(self) -> nn.Module:
        return self.head.out

    def train(self, mode: bool = True) -> "MultimodalRewardModel":
        super().train(mode)
        if self.tower_mode == "frozen":
            self.towers.eval()
        for module in self.towers.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``backbone`` (trained tower weights or their LoRA adapters), ``fusion``, ``head`` (heads and aggregate)."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "fusion": [], "head": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                part = name.split(".")[0]
                groups["backbone" if part == "towers" else "fusion" if part == "fusion" else "head"].append((name, p))
        return groups

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What ``model.safetensors`` holds: everything except the frozen tower weights."""
        trained = {n for n, p in self.towers.named_parameters(prefix="towers") if p.requires_grad}
        return {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()
                if not k.startswith("towers.") or k in trained}


# ----------------------------------------------------------------------------- building blocks


def tower_mode(cfg: ExperimentConfig) -> str:
    if cfg.multimodal.freeze_towers:
        return "frozen"
    return "lora" if cfg.model.lora else "full"


def apply_lora(towers: Towers, *, r: int, alpha: int, dropout: float, targets: Sequence[str] = ()) -> dict:
    """Inject LoRA adapters into the towers (all other tower weights frozen); returns the settings to save."""
    from peft import LoraConfig, inject_adapter_in_model

    chosen = list(targets) or towers.lora_targets()
    try:
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen), towers)
    except ValueError as err:
        raise ValueError(f"LoRA could not adapt the {towers.name!r} towers: {err}; set model.lora_target_modules") \
            from None
    for name, p in towers.named_parameters():
        p.requires_grad_("lora_" in name)
    return {"r": r, "alpha": alpha, "dropout": dropout, "targets": list(targets)}


def _assemble(towers: Towers, attributes: Sequence[str], spec: ItemSpec, fusion_config: dict, aggregate: str,
              weights: Sequence[float], mode: str, lora: dict | None) -> MultimodalRewardModel:
    f = fusion_config
    fusion = build_fusion(f["fusion"], image_dim=towers.image_dim, text_dim=towers.text_dim,
                          image_pooled_dim=towers.image_pooled_dim, text_pooled_dim=towers.text_pooled_dim,
                          hidden=f["hidden"], layers=f["layers"], heads=f["attention_heads"], dropout=f["dropout"],
                          n_scales=len(spec.scales), joint=towers.joint)
    head = RewardHeads(f["hidden"], max(1, len(attributes)), f["head_layers"], f["dropout"])
    aggregator = build_aggregator(aggregate, weights, f["hidden"]) if attributes else None
    return MultimodalRewardModel(towers, fusion, head, aggregator, attributes, spec.scales, tower_mode=mode,
                                 fusion_config=f, aggregate=aggregate, lora=lora)


# ----------------------------------------------------------------------------- the "multimodal" kind


def _processor(cfg: ExperimentConfig) -> ImageTextItems:
    m = cfg.multimodal
    towers = load_towers(cfg.model.backbone)
    mode = tower_mode(cfg)
    if mode == "frozen":
        towers.requires_grad_(False)
    cached = mode == "frozen" and m.cache  # only frozen towers give outputs worth keeping
    size = m.image_size or towers.image_spec.size
    spec = ItemSpec(scales=tuple(sorted(set(m.scales))) or (size,), mean=towers.image_spec.mean,
                    std=towers.image_spec.std, max_text_tokens=min(cfg.data.max_length, towers.max_text_tokens),
                    text_pad_to=towers.text_pad_to, prompt_truncation=cfg.data.prompt_truncation,
                    text_blind=m.text_blind, cached=cached,
                    cache_dir=str(Path(m.cache_dir or default_cache_dir()).expanduser().resolve()),
                    augment=tuple(m.augment), augment_views=m.augment_views if cached and m.augment else 0,
                    tower_batch_size=m.tower_batch_size)
    return ImageTextItems(towers, spec, writable=True, progress=cfg.train.progress).train(True)


def _grow_for_added_tokens(towers: Towers) -> list[int]:
    """Grow the text tower's token table to a tokenizer that had tokens added (open_clip's cannot)."""
    tokenizer = towers.tokenizer
    return towers.grow_text_vocab(len(tokenizer)) if hasattr(tokenizer, "__len__") else []


def _build(cfg: ExperimentConfig, attributes: Sequence[str], processor: ImageTextItems) -> MultimodalRewardModel:
    m, mode = cfg.multimodal, tower_mode(cfg)
    grown = _grow_for_added_tokens(processor.towers)  # labeler tokens (personalization=tokens)
    lora = apply_lora(processor.towers, r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                      targets=cfg.model.lora_target_modules) if mode == "lora" else None
    if grown:  # the added tokens' embeddings must learn, LoRA or not
        processor.towers.text_embeddings().weight.requires_grad_(True)
    fusion_config = {"fusion": m.fusion, "hidden": m.hidden, "layers": m.layers, "attention_heads": m.attention_heads,
                     "dropout": m.dropout, "head_layers": m.head_layers, "token_pool": m.token_pool}
    return _assemble(processor.towers, attributes, processor.spec, fusion_config, cfg.model.aggregate,
                     aggregate_weights(cfg.model, attributes), mode, lora)


def _save(model: MultimodalRewardModel, processor: ImageTextItems, folder: Path, metadata: dict) -> None:
    metadata = {**metadata, "backbone": model.towers.name, "attributes": list(model.attributes),
                "aggregate": model.aggregate, "fusion": model.fusion_config, "towers": model.tower_mode,
                "lora": model.lora, "preprocessing": processor.spec.to_dict()}
    if model.aggregator is not None:
        metadata["aggregate_weights"] = model.aggregator.weights.tolist()
    (folder / "config.json").write_text(json.dumps({CONFIG_KEY: metadata}, indent=2))
    save_file(model.checkpoint_state(), str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor.tokenizer.save_pretrained(folder)


def _load(path: str, device: torch.device, dtype: torch.dtype | None
          ) -> tuple[MultimodalRewardModel, ImageTextItems, dict]:
    meta = read_metadata(path)
    if meta.get("towers") not in TOWER_MODES or "preprocessing" not in meta:
        raise ValueError(f"{path}: not a rewardlab multimodal checkpoint (config.json lacks rewardlab.towers / "
                         "rewardlab.preprocessing)")
    towers = load_towers(meta["backbone"], tokenizer_path=str(path))
    grown = _grow_for_added_tokens(towers)  # labeler tokens
    if meta["towers"] == "lora":
        lora = meta["lora"]
        apply_lora(towers, r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], targets=lora["targets"])
    elif meta["towers"] == "frozen":
        towers.requires_grad_(False)
    if grown:
        towers.text_embeddings().weight.requires_grad_(True)  # trained, so saved with the tower weights
    spec = ItemSpec.from_dict(meta["preprocessing"])
    attributes = meta.get("attributes", [])
    model = _assemble(towers, attributes, spec, meta["fusion"], meta.get("aggregate", "mean"),
                      meta.get("aggregate_weights") or [1.0] * len(attributes), meta["towers"], meta.get("lora"))
    saved = load_file(str(Path(path) / "model.safetensors"))
    expected = model.checkpoint_state()
    if set(saved) != set(expected):
        odd = sorted(set(saved) ^ set(expected))
        raise ValueError(f"{path}: model.safetensors does not match its config.json (e.g. {odd[0]!r}); "
                         "was it written by another version?")
    model.load_state_dict(saved, strict=False)
    model.to(device)
    if dtype is not None:
        for part in (model.fusion, model.head, model.aggregator):
            if part is not None:
                part.to(dtype)
    return model.eval(), ImageTextItems(towers, spec, writable=False, progress=False), meta


MULTIMODAL_KIND = ModelKind(name="multimodal", processor=_processor, build=_build, save=_save, load=_load,
                            help="image + text prompt: image and text towers (EfficientNet + MiniLM, CLIP, SigLIP, "
                                 "open_clip), attention or concat fusion, one head per attribute and an aggregate.")
