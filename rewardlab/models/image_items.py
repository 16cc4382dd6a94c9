"""The item processor of multimodal reward models: (prompt, image) → tower inputs or cached tower outputs.

An item is ``ImageTextItem(text ids, ImageRef, content digest)``; equal items are
computed once per batch. ``collate`` gives the model one of two input sets:

- **cached** (frozen towers, ``multimodal.cache``): the towers' outputs, computed in
  bulk by ``encode_items`` the first time an image or a prompt is seen and read
  from the :class:`~rewardlab.models.embedding_cache.EmbeddingCache` after that:
  ``image_tokens`` (N, T, Di), ``image_pooled`` (N, Pi), ``text_tokens`` (N, L, Dt),
  ``text_mask`` (N, L), ``text_pooled`` (N, Pt). Training never runs a tower.
- **pixels** (towers being trained, or no cache): ``pixels_<size>`` (N, 3, size, size)
  per input scale, normalised, and ``input_ids`` / ``attention_mask`` (N, L).

Augmentation and the cache: with both on, ``multimodal.augment_views`` augmented
views of every image are cached beside the clean one (view 0), and each training
batch picks one of the V + 1 views of an item at random; evaluation and scoring
always read view 0. Without the cache, images are augmented afresh in every
training batch. Randomness (augmentation, view choice) happens only while the
processor is in training mode *and* autograd is on: every evaluation and scoring
path runs under ``torch.inference_mode`` and is deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from rewardlab.data.augment import apply_augment, cat_params, draw_params
from rewardlab.data.fields import render_plain
from rewardlab.data.images import ImageRef, content_digest, image_ref, image_to_tensor, load_image
from rewardlab.models.base import cache_root
from rewardlab.models.embedding_cache import EmbeddingCache, fill

if TYPE_CHECKING:
    from rewardlab.models.towers import Towers

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rewardlab/embeddings`` (``~/.cache/...`` when unset)."""
    return cache_root() / "embeddings"


@dataclass(frozen=True)
class ItemSpec:
    """How items are made; saved in the checkpoint (``preprocessing``) so scoring matches training."""

    scales: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_text_tokens: int
    text_pad_to: int = 0
    prompt_truncation: str = "left"
    text_blind: bool = False
    cached: bool = True
    cache_dir: str | None = None
    augment: tuple[str, ...] = ()
    augment_views: int = 0
    tower_batch_size: int = 32

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ItemSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class ImageTextItem(NamedTuple):
    text: tuple[int, ...]  # token ids of the prompt
    image: ImageRef
    digest: str  # digest of the image bytes: the cache key


def _text_key(ids: tuple[int, ...]) -> str:
    return "text/" + hashlib.blake2b(repr(ids).encode(), digest_size=16).hexdigest()


def _view_seed(digest: str, view: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{digest}/{view}".encode(), digest_size=8).digest(), "little") >> 1


class ImageTextItems:
    """:class:`~rewardlab.contracts.batch.ItemProcessor` for (prompt, image) items; see the module docstring.

    Args:
        towers: the model's towers (used here to fill the cache).
        spec: preprocessing and caching settings.
        writable: the cache may be written (training); scoring reads it and keeps misses in memory.
        progress: show a progress bar while filling the cache.

    Example (cached, dual towers at 64 px: 2 x 2 image tokens of 1280, MiniLM text tokens of 384)::

        items, truncated = processor.encode_items(["a red circle above a blue square, plain"] * 2,
                                                  ["images/a.png", "images/b.png"])
        {k: tuple(v.shape) for k, v in processor.collate(items).items()}
        # {'text_tokens': (2, 13, 384), 'text_mask': (2, 13), 'text_pooled': (2, 384),
        #  'image_tokens': (2, 4, 1280), 'image_pooled': (2, 1280)}
    """

    def __init__(self, towers: Towers, spec: ItemSpec, *, writable: bool = True, progress: bool = True):
        self.towers, self.spec, self.progress = towers, spec, progress
        self.training = False
        self.tokenizer = towers.tokenizer
        self.tokenizer.truncation_side = "left" if spec.prompt_truncation == "left" else "right"
        self.pad_token_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        # every item's image tokens, at every scale: what a token budget must count beside the prompt's
        self.image_tokens = sum(rows * cols + lead for rows, cols, lead in map(towers.grid, spec.scales))
        self._decodable: set[str] = set()  # digests checked to decode (pixel inputs)
        self.image_cache = self.text_cache = None
        if spec.cached:
            root = spec.cache_dir or default_cache_dir()
            common = {"backbone": towers.name, "version": CACHE_VERSION}
            self.image_cache = EmbeddingCache(root, {**common, "tower": "image", "weights": towers.fingerprint("image"),
                                                     "scales": list(spec.scales), "mean": list(spec.mean),
                                                     "std": list(spec.std), "augment": sorted(spec.augment)},
                                              writable=writable)
            self.text_cache = EmbeddingCache(root, {**common, "tower": "text", "weights": towers.fingerprint("text")},
                                             writable=writable)

    # ------------------------------------------------------------------ protocol

    def train(self, mode: bool = True) -> "ImageTextItems":
        """Training mode allows random augmentation and random cached views; returns self."""
        self.training = mode
        return self

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        return render_plain(messages, add_generation_prompt)

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[ImageTextItem], int]:
        """Tokenise prompts, digest images, and fill the cache (or check images decode); (items, truncated).

        Raises:
            DataError: an image is missing, empty, too large or not an image (naming row and field).
        """
        refs = [self._ref(r, i) for i, r in enumerate(responses)]
        texts = [""] * len(prompts) if self.spec.text_blind else list(prompts)
        ids, truncated = self._tokenize(texts)
        items = [ImageTextItem(t, ref, content_digest(ref)) for t, ref in zip(ids, refs)]
        if self.spec.cached:
            self._fill(items)
        else:
            for item in items:
                if item.digest not in self._decodable:
                    load_image(item.image)  # fail now, naming the row, not inside a training step
                    self._decodable.add(item.digest)
        return items, truncated

    def cost(self, item: ImageTextItem) -> int:
        """The item's tokens: its prompt's, and its image's at every scale (the same for every item)."""
        return len(item.text) + self.image_tokens

    def with_prefix_token(self, item: ImageTextItem, token: int) -> ImageTextItem:
        """``token`` in front of the prompt's text: after a leading special token ([CLS], <bos>), else first."""
        if self.spec.cached:
            raise ValueError("a labeler token changes the text tower's input, so its output cannot be cached: "
                             "personalization=tokens needs multimodal.freeze_towers=false")
        ids = item.text
        at = 1 if ids and ids[0] in set(self.tokenizer.all_special_ids) else 0
        ids = (*ids[:at], token, *ids[at:])
        if len(ids) > self.spec.max_text_tokens:  # keep the last token: CLIP pools at its end-of-text token
            ids = (*ids[: self.spec.max_text_tokens - 1], ids[-1])
        return item._replace(text=ids)

    def collate(self, items: Sequence[ImageTextItem], extra_padding: int = 0) -> dict[str, torch.Tensor]:
        """Stack items into model inputs (see the module docstring); ``extra_padding`` more masked text positions."""
        if self.spec.cached:
            return {**self._cached_text(items, extra_padding), **self._cached_images(items)}
        width = max(max(len(it.text) for it in items), self.spec.text_pad_to) + extra_padding
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            input_ids[row, : len(it.text)] = torch.tensor(it.text, dtype=torch.long)
            attention_mask[row, : len(it.text)] = 1
        params = draw_params(len(items), self.spec.augment) if self._random() else None
        pixels = self._pixels([load_image(it.image) for it in items], params)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                **{f"pixels_{s}": x for s, x in pixels.items()}}

    def mix(self, items: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor
            ) -> dict[str, torch.Tensor]:
        """Append rows ``lam * x[a] + (1 - lam) * x[b]`` (M new rows) to every float input.

        Token ids and masks of the new rows are row ``a``'s: the two items of a pair answer
        the same prompt, so they agree. Mixing pixels is classic mixup; mixing cached
        features is mixup in feature space.
        """
        out = {}
        for name, x in items.items():
            if x.is_floating_point():
                w = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
                new = w * x[a] + (1 - w) * x[b]
            else:
                new = x[a]
            out[name] = torch.cat([x, new])
        return out

    # ------------------------------------------------------------------ text

    def _tokenize(self, texts: list[str]) -> tuple[list[tuple[int, ...]], int]:
        unique = list(dict.fromkeys(texts))
        limit = self.spec.max_text_tokens
        full = self.tokenizer(unique)["input_ids"]
        cut = self.tokenizer(unique, truncation=True, max_length=limit)["input_ids"]
        by_text = {t: tuple(ids) for t, ids in zip(unique, cut)}
        long = {t for t, ids in zip(unique, full) if len(ids) > limit}
        return [by_text[t] for t in texts], sum(t in long for t in texts)

    def _cached_text(self, items: Sequence[ImageTextItem], extra_padding: int) -> dict[str, torch.Tensor]:
        entries = self.text_cache.get([_text_key(it.text) for it in items])
        width = max(e["tokens"].shape[0] for e in entries) + extra_padding
        tokens = torch.zeros(len(items), width, entries[0]["tokens"].shape[1])
        mask = torch.zeros(len(items), width, dtype=torch.long)
        for row, e in enumerate(entries):
            tokens[row, : e["tokens"].shape[0]] = e["tokens"]
            mask[row, : e["tokens"].shape[0]] = 1
        return {"text_tokens": tokens, "text_mask": mask, "text_pooled": torch.stack([e["pooled"] for e in entries])}

    def _compute_text(self, keys: list[str], ids: dict[str, tuple[int, ...]]) -> dict[str, dict[str, torch.Tensor]]:
        rows = [ids[k] for k in keys]
        width = max(max(map(len, rows)), self.spec.text_pad_to)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
        device = self._device()
        tokens, pooled = self.towers.encode_text(input_ids.to(device), mask.to(device))
        tokens, pooled = tokens.float().cpu(), pooled.float().cpu()
        return {k: {"tokens": tokens[r, : len(rows[r])].clone(), "pooled": pooled[r].clone()}
                for r, k in enumerate(keys)}

    # ------------------------------------------------------------------ images

    def _ref(self, response: object, i: int) -> ImageRef:
        if isinstance(response, ImageRef):
            return response
        if isinstance(response, Image.Image):
            buffer = io.BytesIO()
            response.save(buffer, format="PNG")
            return ImageRef(data=buffer.getvalue(), where=f"item {i}", field="image")
        return image_ref(response, where=f"item {i}", field="image", base_dir=None)

    def _random(self) -> bool:
        return self.training and bool(self.spec.augment) and torch.is_grad_enabled()

    def _pixels(self, images: list[Image.Image], params: dict | None) -> dict[int, torch.Tensor]:
        """{size: (B, 3, size, size)} normalised; ``params`` augment at the largest size, then resize."""
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        if params is None:
            raw = {s: torch.stack([image_to_tensor(img, s) for img in images]) for s in self.spec.scales}
        else:
            top = max(self.spec.scales)
            big = apply_augment(torch.stack([image_to_tensor(img, top) for img in images]), params)
            raw = {s: big if s == top else F.interpolate(big, size=(s, s), mode="bilinear", antialias=True,
                                                         align_corners=False) for s in self.spec.scales}
        return {s: (x - mean) / std for s, x in raw.items()}

    def _views(self) -> list[int]:
        return list(range(self.spec.augment_views + 1)) if self.training and self.spec.augment else [0]

    def _cached_images(self, items: Sequence[ImageTextItem]) -> dict[str, torch.Tensor]:
        n_views = self.spec.augment_views + 1
        views = torch.randint(0, n_views, (len(items),)).tolist() if self._random() else [0] * len(items)
        entries = self.image_cache.get([f"image/{it.digest}/v{v}" for it, v in zip(items, views)])
        return {"image_tokens": torch.stack([e["tokens"] for e in entries]),
                "image_pooled": torch.stack([e["pooled"] for e in entries])}

    def _compute_images(self, keys: list[str], refs: dict[str, ImageRef]) -> dict[str, dict[str, torch.Tensor]]:
        parsed = [(k.split("/")[1], int(k.split("/")[2][1:])) for k in keys]
        images = [load_image(refs[d]) for d, _ in parsed]
        clean = [i for i, (_, v) in enumerate(parsed) if v == 0]
        views = [i for i, (_, v) in enumerate(parsed) if v > 0]
        out = {}
        for rows, params in ((clean, None), (views, "draw")):
            if not rows:
                continue
            if params is not None:  # one generator per (image, view): the same view in any batch
                params = cat_params([draw_params(1, self.spec.augment,
                                                 torch.Generator().manual_seed(_view_seed(*parsed[i])))
                                     for i in rows])
            pixels = self._pixels([images[i] for i in rows], params)
            tokens, pooled = self.towers.encode_images({s: x.to(self._device()) for s, x in pixels.items()})
            tokens, pooled = tokens.float().cpu(), pooled.float().cpu()
            out.update({keys[i]: {"tokens": tokens[r].clone(), "pooled": pooled[r].clone()} for r, i in enumerate(rows)})
        return out

    def _device(self) -> torch.device:
        return next(self.towers.parameters()).device

    def _fill(self, items: list[ImageTextItem]) -> None:
        """Compute what the cache lacks; misses of a read-only cache stay in memory. Cached towers are frozen:
        they stay in eval mode (no dropout, pretrained BatchNorm statistics)."""
        self.towers.eval()
        refs = {it.digest: it.image for it in items}
        keys = [f"image/{d}/v{v}" for d in refs for v in self._views()]
        fill(self.image_cache, keys, lambda batch: self._compute_images(batch, refs),
             batch_size=self.spec.tower_batch_size, desc="image features", progress=self.progress)
        ids = {_text_key(it.text): it.text for it in items}
        fill(self.text_cache, list(ids), lambda batch: self._compute_text(batch, ids),
             batch_size=max(64, self.spec.tower_batch_size), desc="text features", progress=self.progress)

