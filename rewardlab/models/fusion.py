"""Fusion of image and text tower outputs, and the reward heads on top.

Shapes: N items; image tokens (N, T, Di) with a pooled vector (N, Pi); text tokens
(N, L, Dt) with a mask (N, L) and a pooled vector (N, Pt). Everything is projected
to ``hidden`` (H) first.

- ``concat`` fusion: pooled image ⊕ pooled text ⊕ their product ⊕ their cosine → MLP.
  Cheap, but it cannot tell *where* in the picture something is.
- ``attention`` fusion: image tokens attend to text tokens and text tokens to image
  tokens, then self-attention runs over the joint sequence; a learned gate mixes the
  attended summary with the concat path. Image tokens carry their grid position (and
  input scale), which spatial judgements ("a circle *above* a square") need.

The heads map the fused vector to one reward per attribute (a residual MLP), and
the aggregate column combines them (fixed / learned weights, or a gate that
weighs attributes per item).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.models.text import Aggregator

FUSIONS = ("attention", "concat")


def grid_positions(grids: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Token positions of the image tokens of several scales: (T, 4) rows of (y, x, is_prefix, scale).

    ``grids`` holds one (rows, columns, prefix tokens) per scale; grid tokens are row-major
    after the prefix (e.g. CLS) tokens, coordinates in [-1, 1].
    """
    rows = []
    for scale, (h, w, prefix) in enumerate(grids):
        rows += [(0.0, 0.0, 1.0, float(scale))] * prefix
        ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
        xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
        rows += [(float(y), float(x), 0.0, float(scale)) for y in ys for x in xs]
    return torch.tensor(rows, dtype=torch.float32)


def pooled_grid(grid: tuple[int, int, int], k: int) -> tuple[int, int, int]:
    """The (rows, columns, prefix) of a grid after :func:`pool_grid_tokens` with window ``k``."""
    h, w, prefix = grid
    return -(-h // k), -(-w // k), prefix


def pool_grid_tokens(tokens: torch.Tensor, grids: Sequence[tuple[int, int, int]], k: int) -> torch.Tensor:
    """Average-pool each scale's grid tokens in k×k windows (edge windows average the cells they hold);
    prefix tokens (e.g. CLS) pass through. (N, T, D) → (N, T', D), T' from :func:`pooled_grid`.

    Example:
        >>> x = torch.arange(10.).reshape(1, 10, 1)  # one CLS token, then a 3x3 grid 1..9
        >>> pool_grid_tokens(x, [(3, 3, 1)], 2).flatten().tolist()
        [0.0, 3.0, 4.5, 7.5, 9.0]
    """
    if k == 1:
        return tokens
    parts, start = [], 0
    for h, w, prefix in grids:
        parts.append(tokens[:, start: start + prefix])
        grid = tokens[:, start + prefix: start + prefix + h * w]  # (N, h*w, D)
        n, _, d = grid.shape
        image = grid.reshape(n, h, w, d).permute(0, 3, 1, 2)  # (N, D, h, w)
        pooled = F.avg_pool2d(image, k, k, ceil_mode=True)  # (N, D, h', w')
        parts.append(pooled.flatten(2).transpose(1, 2))
        start += prefix + h * w
    return torch.cat(parts, dim=1)


class PositionEmbedding(nn.Module):
    """(T, 4) positions → (T, H): 2-D sine/cosine features of (y, x) projected, plus learned prefix and scale
    embeddings. Fixed frequencies generalise from few images better than a learned table."""

    def __init__(self, hidden: int, n_scales: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32) / 2,
                             persistent=False)
        self.proj = nn.Linear(4 * frequencies, hidden)
        self.prefix = nn.Parameter(torch.zeros(hidden))
        self.scale = nn.Embedding(max(1, n_scales), hidden)
        nn.init.normal_(self.scale.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        yx = positions[:, :2, None] * self.freqs  # (T, 2, F)
        waves = torch.cat([yx.sin(), yx.cos()], dim=-1).flatten(1)  # (T, 4F)
        is_prefix = positions[:, 2:3]
        out = (1 - is_prefix) * self.proj(waves) + is_prefix * self.prefix
        return out + self.scale(positions[:, 3].long())  # (T, H)


def _mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))


class PooledFusion(nn.Module):
    """The concat path: [i, t, i*t, cos(i, t)] of the projected pooled vectors (and the towers' own cosine when
    their spaces are joint) → MLP → (N, H)."""

    def __init__(self, image_dim: int, text_dim: int, hidden: int, dropout: float, joint: bool):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(image_dim, hidden), nn.LayerNorm(hidden))
        self.text = nn.Sequential(nn.Linear(text_dim, hidden), nn.LayerNorm(hidden))
        self.joint = joint
        self.mlp = _mlp(3 * hidden + 1 + int(joint), hidden, dropout)

    def forward(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> torch.Tensor:
        i, t = self.image(image_pooled), self.text(text_pooled)  # (N, H)
        parts = [i, t, i * t, F.cosine_similarity(i, t, dim=-1)[:, None]]
        if self.joint:  # CLIP-like towers: the similarity they were trained to produce
            parts.append(F.cosine_similarity(image_pooled, text_pooled, dim=-1)[:, None])
        return self.mlp(torch.cat(parts, dim=-1))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention of ``x`` (queries) over ``context``, with a residual."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_pad: torch.Tensor | None) -> torch.Tensor:
        kv = self.norm_kv(context)
        out, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=context_pad, need_weights=False)
        return x + self.drop(out)


class AttentionFusion(nn.Module):
    """Cross-attention both ways, self-attention over the joint tokens, gated with the pooled path → (N, H)."""

    def __init__(self, image_dim: int, text_dim: int, pooled_dims: tuple[int, int], hidden: int, layers: int,
                 heads: int, dropout: float, n_scales: int, joint: bool):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(image_dim, hidden), nn.LayerNorm(hidden))
        self.text = nn.Sequential(nn.Linear(text_dim, hidden), nn.LayerNorm(hidden))
        self.position = PositionEmbedding(hidden, n_scales)
        self.modality = nn.Parameter(torch.zeros(2, hidden))  # image, text
        self.image_to_text = CrossBlock(hidden, heads, dropout)
        self.text_to_image = CrossBlock(hidden, heads, dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # No nested-tensor fast path: the same item must score the same in any batch.
        self.joint_layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(hidden)
        self.pooled = PooledFusion(*pooled_dims, hidden, dropout, joint)
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, image_tokens, image_positions, image_pooled, text_tokens, text_mask, text_pooled):
        img = self.image(image_tokens) + self.position(image_positions) + self.modality[0]  # (N, T, H)
        txt = self.text(text_tokens) + self.modality[1]  # (N, L, H)
        text_pad = text_mask == 0  # (N, L) True where padding
        img, txt = self.image_to_text(img, txt, text_pad), self.text_to_image(txt, img, None)
        joint = torch.cat([img, txt], dim=1)  # (N, T + L, H)
        pad = torch.cat([torch.zeros_like(text_pad[:, :1]).expand(-1, img.shape[1]), text_pad], dim=1)
        if self.joint_layers is not None:
            joint = self.joint_layers(joint, src_key_padding_mask=pad)
        keep = (~pad).to(joint.dtype).unsqueeze(-1)
        attended = (self.norm(joint) * keep).sum(1) / keep.sum(1)  # (N, H)
        pooled = self.pooled(image_pooled, text_pooled)  # (N, H)
        gate = torch.sigmoid(self.gate(torch.cat([attended, pooled], dim=-1)))
        return gate * attended + (1 - gate) * pooled


class ConcatFusion(nn.Module):
    """Only the pooled path; tokens are ignored."""

    def __init__(self, pooled_dims: tuple[int, int], hidden: int, dropout: float, joint: bool):
        super().__init__()
        self.pooled = PooledFusion(*pooled_dims, hidden, dropout, joint)

    def forward(self, image_tokens, image_positions, image_pooled, text_tokens, text_mask, text_pooled):
        return self.pooled(image_pooled, text_pooled)


def build_fusion(kind: str, *, image_dim: int, text_dim: int, image_pooled_dim: int, text_pooled_dim: int,
                 hidden: int, layers: int, heads: int, dropout: float, n_scales: int, joint: bool) -> nn.Module:
    """The fusion module ``kind`` names (see :data:`FUSIONS`)."""
    pooled = (image_pooled_dim, text_pooled_dim)
    if kind == "attention":
        return AttentionFusion(image_dim, text_dim, pooled, hidden, layers, heads, dropout, n_scales, joint)
    if kind == "concat":
        return ConcatFusion(pooled, hidden, dropout, joint)
    raise ValueError(f"unknown fusion {kind!r} (multimodal.fusion); valid: {', '.join(FUSIONS)}")


# ----------------------------------------------------------------------------- heads


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = _mlp(hidden, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mlp(self.norm(x)))


class RewardHeads(nn.Module):
    """Fused (N, H) → rewards (N, n_outputs): ``layers`` residual blocks, a norm and a linear layer."""

    def __init__(self, hidden: int, n_outputs: int, layers: int, dropout: float):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(fused)))


class GateAggregator(nn.Module):
    """Aggregate = Σ_a w_a(x) r_a with w(x) = softmax over attributes computed from the fused features.

    ``forward(heads (N, A), fused (N, H)) -> (N,)``; ``weights`` is the gate's mean weighting at
    initialisation (uniform), for the record only.
    """

    def __init__(self, hidden: int, n_attributes: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.score = nn.Linear(hidden, n_attributes)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    @property
    def weights(self) -> torch.Tensor:
        return self.score.bias.softmax(-1)

    def forward(self, heads: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        w = self.score(self.norm(fused)).softmax(-1)  # (N, A)
        return (w * heads).sum(-1)


def build_aggregator(kind: str, weights: Sequence[float], hidden: int) -> nn.Module:
    """mean / weighted / learned: :class:`~rewardlab.models.text.Aggregator`; gate: :class:`GateAggregator`."""
    if kind == "gate":
        return GateAggregator(hidden, len(weights))
    return Aggregator(weights, learned=kind == "learned")
