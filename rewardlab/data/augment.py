"""Image augmentation for multimodal training: random parameters drawn per image, applied in one batch.

Parameters are drawn first (from a given ``torch.Generator``, or the global RNG) and
applied after, with kornia, so that the cached augmented views of an image are
the same whatever batch they are computed in, and so that on-the-fly augmentation
resumes exactly (the trainer saves the global RNG state).

Operations (``multimodal.augment``):

- ``hflip``: mirror left-right with probability 1/2. It swaps "left of" and
  "right of": do not use it when prompts name horizontal positions.
- ``rotate``: rotate by up to ±10 degrees.
- ``crop``: random resized crop keeping 80-100 % of each side (aspect ±10 %).
- ``color``: brightness ±0.1, contrast and saturation ×0.8-1.2. The hue is never
  changed, since prompts name colours.

Example:
    >>> x = torch.rand(2, 3, 32, 32)
    >>> params = draw_params(2, ("crop", "color"), torch.Generator().manual_seed(0))
    >>> apply_augment(x, params).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

AUGMENTATIONS = ("hflip", "rotate", "crop", "color")
MAX_DEGREES = 10.0
CROP_SIDE = (0.8, 1.0)
ASPECT = (0.9, 1.1)
BRIGHTNESS, CONTRAST, SATURATION = 0.1, (0.8, 1.2), (0.8, 1.2)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def draw_params(n: int, ops: Sequence[str], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random parameters of ``ops`` for ``n`` images; absent operations get identity values.

    Returns (n,) tensors: ``flip`` (0/1), ``angle`` (degrees), ``side_x``/``side_y`` (kept fraction of
    each side), ``shift_x``/``shift_y`` (crop centre offset as a fraction of the side), ``brightness``,
    ``contrast``, ``saturation``.
    """
    unknown = sorted(set(ops) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r} (multimodal.augment); valid: {', '.join(AUGMENTATIONS)}")
    ones, zeros = torch.ones(n), torch.zeros(n)
    p = {"flip": zeros, "angle": zeros, "side_x": ones, "side_y": ones, "shift_x": zeros, "shift_y": zeros,
         "brightness": zeros, "contrast": ones, "saturation": ones}
    if "hflip" in ops:
        p["flip"] = (torch.rand(n, generator=generator) < 0.5).float()
    if "rotate" in ops:
        p["angle"] = _uniform(n, -MAX_DEGREES, MAX_DEGREES, generator)
    if "crop" in ops:
        side = _uniform(n, *CROP_SIDE, generator)
        aspect = _uniform(n, math.log(ASPECT[0]), math.log(ASPECT[1]), generator).exp().sqrt()
        p["side_x"], p["side_y"] = (side * aspect).clamp(max=1.0), (side / aspect).clamp(max=1.0)
        p["shift_x"] = (torch.rand(n, generator=generator) - 0.5) * (1 - p["side_x"])
        p["shift_y"] = (torch.rand(n, generator=generator) - 0.5) * (1 - p["side_y"])
    if "color" in ops:
        p["brightness"] = _uniform(n, -BRIGHTNESS, BRIGHTNESS, generator)
        p["contrast"] = _uniform(n, *CONTRAST, generator)
        p["saturation"] = _uniform(n, *SATURATION, generator)
    return p


def cat_params(params: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join parameters drawn separately (e.g. one generator per image) into one batch."""
    return {k: torch.cat([p[k] for p in params]) for k in params[0]}


def _warp_matrices(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """(n, 2, 3) source → output pixel maps of flip, rotation and crop about the image centre."""
    n = p["angle"].shape[0]
    c = (size - 1) / 2
    theta = p["angle"] * math.pi / 180
    cos, sin = theta.cos(), theta.sin()
    flip = 1 - 2 * p["flip"]
    # output -> source: p_src = centre + shift + diag(side) · R(θ) · diag(flip, 1) · (p_out - centre)
    to_src = torch.zeros(n, 3, 3)
    to_src[:, 0, 0], to_src[:, 0, 1] = p["side_x"] * cos * flip, -p["side_x"] * sin
    to_src[:, 1, 0], to_src[:, 1, 1] = p["side_y"] * sin * flip, p["side_y"] * cos
    to_src[:, 2, 2] = 1
    offset = torch.stack([c + p["shift_x"] * size, c + p["shift_y"] * size], dim=1)  # (n, 2)
    to_src[:, :2, 2] = offset - (to_src[:, :2, :2] @ torch.full((n, 2, 1), c)).squeeze(-1)
    return torch.linalg.inv(to_src)[:, :2]


def apply_augment(images: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Augment (n, 3, S, S) images in [0, 1] with parameters from :func:`draw_params`; same shape out."""
    from kornia.enhance import adjust_brightness, adjust_contrast, adjust_saturation
    from kornia.geometry.transform import warp_affine

    size = images.shape[-1]
    out = images
    geometric = bool(p["flip"].any() or p["angle"].any() or (p["side_x"] != 1).any() or (p["side_y"] != 1).any())
    if geometric:
        out = warp_affine(out, _warp_matrices(p, size).to(out), (size, size), padding_mode="reflection",
                          align_corners=True)
    if p["brightness"].any() or (p["contrast"] != 1).any() or (p["saturation"] != 1).any():
        out = adjust_saturation(out, p["saturation"].to(out))
        out = adjust_contrast(out, p["contrast"].to(out))
        out = adjust_brightness(out, p["brightness"].to(out))
    return out.clamp(0.0, 1.0)
