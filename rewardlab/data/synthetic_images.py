"""A generated text-to-image preference set: coloured shapes drawn to (mis)match a prompt.

The project ships no third-party pictures, so ``rewardlab demo --task image``
and the tests draw their own. A prompt names two coloured shapes, where the
first sits relative to the second, and a texture inside both:
``"a red circle above a blue square, striped"``. Each candidate picture is drawn
from a *scene* of the same kind (two coloured shapes, a layout, a texture) plus a
quality level, and is rated 1-5 on five attributes by comparing its scene with
the prompt. The ratings are exact functions of the drawing choices:

- **spatial**: 5 if the first shape is placed as the prompt says, 3 if the pair is
  side by side where the prompt stacks them (or the reverse), 1 if their places
  are swapped, or if neither drawn shape can be told to be either named shape;
- **iconography**: shape types, per shape: 5 both right, 3 one right, 1 none;
- **style**: colours, per shape: 5 / 3 / 1 the same way;
- **fidelity**: picture quality: 5 is clean, each step down adds Gaussian blur and
  pixel noise, down to 1;
- **material**: the texture inside the shapes: 5 right, 1 wrong.

Which drawn shape stands for which named shape is settled by matching shape
types first, then colours (a red square and a blue circle, for "a red circle ...
a blue square", are a square and a circle with the colours swapped).

Why a model that ignores the prompt cannot do well: every attribute but fidelity
is a relation between picture and prompt, and the drawing choices are made so
that no picture statistic gives it away. Each attribute is chosen right or wrong
independently; a wrong shape or colour is drawn uniformly from those the prompt
does not name, so over the data set every colour, shape, texture and layout is
as common in good pictures as in bad ones; the two drawn shapes always differ in
type and colour, as in every prompt. And each prompt's candidates include a
perfect picture of its own and the perfect picture of a very different prompt
(the same bytes under another group), so one picture is rated 5 under one prompt
and 1 under the other. Positions, sizes, gaps and background are jittered so no
two drawings are pixel-identical. Only fidelity can be judged from the picture
alone, as it should be.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ATTRIBUTES = ("spatial", "iconography", "style", "fidelity", "material")
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "star")
COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 215),
           "yellow": (235, 200, 30), "purple": (135, 55, 175), "orange": (245, 135, 20)}
RELATIONS = ("above", "below", "left of", "right of")
TEXTURES = ("plain", "striped", "dotted", "checkered")

_OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
_DIRECTION = {"above": (0, -1), "below": (0, 1), "left of": (-1, 0), "right of": (1, 0)}
_LEVEL = {2: 5.0, 1: 3.0, 0: 1.0}  # how many of the two shapes are right -> rating
_CROSS = [(.32, 0), (.68, 0), (.68, .32), (1, .32), (1, .68), (.68, .68), (.68, 1), (.32, 1), (.32, .68),
          (0, .68), (0, .32), (.32, .32)]
_STAR_RADII = [.5 if k % 2 == 0 else .22 for k in range(10)]  # outer and inner corners alternate
_STAR = [(.5 + r * np.cos(-np.pi / 2 + k * np.pi / 5), .55 + r * np.sin(-np.pi / 2 + k * np.pi / 5))
         for k, r in enumerate(_STAR_RADII)]
_POLYGONS = {"square": [(.08, .08), (.92, .08), (.92, .92), (.08, .92)], "triangle": [(.5, .04), (.96, .9), (.04, .9)],
             "diamond": [(.5, 0), (1, .5), (.5, 1), (0, .5)], "cross": _CROSS, "star": _STAR}
_MAX_PROMPTS = (len(SHAPES) * (len(SHAPES) - 1)) * (len(COLOURS) * (len(COLOURS) - 1)) * len(RELATIONS) * len(TEXTURES)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Thing(NamedTuple):
    colour: str
    shape: str


class _Scene(NamedTuple):
    """A prompt, or what a picture shows: ``first`` is ``relation`` ``second``."""

    first: _Thing
    second: _Thing
    relation: str
    texture: str

    def text(self) -> str:
        a, b = self.first, self.second
        return f"{_article(a.colour)} {a.colour} {a.shape} {self.relation} {_article(b.colour)} {b.colour} {b.shape}, " \
               f"{self.texture}"


def _rate(picture: _Scene, prompt: _Scene, quality: int) -> dict[str, float]:
    """The five 1-5 ratings of a picture (its scene and quality level) for a prompt."""

    def matches(a: _Thing, b: _Thing) -> tuple[int, int]:  # (shape types right, colours right)
        return (int(a.shape == prompt.first.shape) + int(b.shape == prompt.second.shape),
                int(a.colour == prompt.first.colour) + int(b.colour == prompt.second.colour))

    straight, crossed = matches(picture.first, picture.second), matches(picture.second, picture.first)
    shapes, colours = max(straight, crossed)
    if straight == crossed:  # no telling which drawn shape is which named one
        spatial = 1.0
    else:
        relation = picture.relation if straight > crossed else _OPPOSITE[picture.relation]
        spatial = 5.0 if relation == prompt.relation else 1.0 if relation == _OPPOSITE[prompt.relation] else 3.0
    return {"spatial": spatial, "iconography": _LEVEL[shapes], "style": _LEVEL[colours],
            "fidelity": float(quality), "material": 5.0 if picture.texture == prompt.texture else 1.0}


def _pick(rng: np.random.Generator, options: tuple[str, ...], exclude: set[str]) -> str:
    allowed = [o for o in options if o not in exclude]
    return allowed[int(rng.integers(len(allowed)))]


def _random_prompt(rng: np.random.Generator) -> _Scene:
    s1, s2 = rng.choice(len(SHAPES), 2, replace=False)
    c1, c2 = rng.choice(list(COLOURS), 2, replace=False)
    return _Scene(_Thing(str(c1), SHAPES[s1]), _Thing(str(c2), SHAPES[s2]),
                  RELATIONS[int(rng.integers(4))], TEXTURES[int(rng.integers(4))])


def _random_candidate(rng: np.random.Generator, prompt: _Scene) -> _Scene:
    """Each shape type, colour, the layout and the texture chosen right or wrong independently."""
    named_shapes = {prompt.first.shape, prompt.second.shape}
    named_colours = {prompt.first.colour, prompt.second.colour}
    shapes, colours = [prompt.first.shape, prompt.second.shape], [prompt.first.colour, prompt.second.colour]
    for i in (0, 1):  # a wrong value is never a named one nor the other shape's: the two always differ
        if rng.random() < 0.5:
            shapes[i] = _pick(rng, SHAPES, named_shapes | {shapes[1 - i]})
        if rng.random() < 0.5:
            colours[i] = _pick(rng, tuple(COLOURS), named_colours | {colours[1 - i]})
    texture = prompt.texture if rng.random() < 0.5 else _pick(rng, TEXTURES, {prompt.texture})
    return _Scene(_Thing(colours[0], shapes[0]), _Thing(colours[1], shapes[1]),
                  RELATIONS[int(rng.integers(4))], texture)


def _texture_mask(texture: str, side: int, origin: tuple[float, float], period: float) -> np.ndarray:
    """(side, side) bool: where the texture's dark marks go, aligned to the shape's corner."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    yy, xx = yy - origin[1], xx - origin[0]
    half = period / 2
    if texture == "striped":
        return (yy // half) % 2 == 1
    if texture == "checkered":
        return (yy // half + xx // half) % 2 == 1
    if texture == "dotted":
        return (xx % period - half) ** 2 + (yy % period - half) ** 2 < (0.3 * period) ** 2
    return np.zeros((side, side), dtype=bool)


def _paint(canvas: np.ndarray, thing: _Thing, texture: str, centre: tuple[float, float], width: float) -> None:
    side = canvas.shape[0]
    x0, y0 = centre[0] - width / 2, centre[1] - width / 2
    shape_img = Image.new("L", (side, side))
    draw = ImageDraw.Draw(shape_img)
    if thing.shape == "circle":
        draw.ellipse((x0 + .04 * width, y0 + .04 * width, x0 + .96 * width, y0 + .96 * width), fill=255)
    else:
        draw.polygon([(x0 + u * width, y0 + v * width) for u, v in _POLYGONS[thing.shape]], fill=255)
    inside = np.asarray(shape_img) > 0
    marks = _texture_mask(texture, side, (x0, y0), period=side / 9)
    colour = np.array(COLOURS[thing.colour], dtype=np.float32)
    canvas[inside & ~marks] = colour
    canvas[inside & marks] = colour * 0.45


def _render(scene: _Scene, quality: int, size: int, rng: np.random.Generator) -> bytes:
    """PNG bytes of the scene: drawn at twice the size and averaged down, then degraded."""
    side = 2 * size
    canvas = np.full((side, side, 3), float(rng.integers(226, 250)), dtype=np.float32)
    dx, dy = _DIRECTION[scene.relation]
    gap = side * rng.uniform(0.21, 0.24)
    centre = side / 2 + rng.uniform(-0.02, 0.02, 2) * side
    for thing, sign in ((scene.first, 1), (scene.second, -1)):
        x, y = centre + sign * gap * np.array([dx, dy]) + rng.uniform(-0.02, 0.02, 2) * side
        _paint(canvas, thing, scene.texture, (x, y), width=side * rng.uniform(0.32, 0.38))
    img = Image.fromarray(canvas.astype(np.uint8)).reduce(2)
    damage = 5 - quality
    if damage:
        img = img.filter(ImageFilter.GaussianBlur(0.3 * damage * size / 64))
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 7.5 * damage, (size, size, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _most_different(i: int, prompts: list[_Scene], rng: np.random.Generator) -> int:
    """Another prompt (of up to 64 looked at) whose perfect picture is worst for prompt ``i``."""
    others = [j for j in range(len(prompts)) if j != i]
    pool = rng.choice(others, min(64, len(others)), replace=False)
    cost = {int(j): sum(_rate(prompts[j], prompts[i], 5).values()) for j in pool}
    best = min(cost.values())
    return int(rng.choice([j for j, c in cost.items() if c == best]))


def _varied_candidates(rng: np.random.Generator, prompt: _Scene, count: int,
                       fixed: list[dict[str, float]]) -> list[tuple[_Scene, int]]:
    """Random candidates, redrawn until every attribute's ratings differ within the prompt."""
    while True:  # the fixed two nearly always vary already: one draw suffices
        drawn = [(_random_candidate(rng, prompt), int(rng.integers(1, 6))) for _ in range(count)]
        ratings = fixed + [_rate(scene, prompt, quality) for scene, quality in drawn]
        if all(len({r[a] for r in ratings}) > 1 for a in ATTRIBUTES):
            return drawn


def make_image_preferences(out_dir: Path, *, n_prompts: int = 120, candidates: int = 6, size: int = 64,
                           seed: int = 0) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/ratings.jsonl``; return the jsonl path.

    One row per picture, the rows of a prompt together, ``image`` relative to the
    jsonl's folder::

        {"prompt": "a red circle above a blue square, striped", "image": "images/p0003_c2.png",
         "group": "p0003", "spatial": 5.0, "iconography": 3.0, "style": 5.0, "fidelity": 2.0,
         "material": 1.0}

    Args:
        out_dir: folder to write to (created if needed).
        n_prompts: distinct prompts (2 to 14400).
        candidates: pictures per prompt (at least 3: its perfect picture, another
            prompt's perfect picture and random ones).
        size: picture width and height in pixels (at least 32).
        seed: the same seed writes the same files.

    Returns:
        The path of ``ratings.jsonl``.

    Raises:
        ValueError: an argument is out of range.
    """
    if not 2 <= n_prompts <= _MAX_PROMPTS:
        raise ValueError(f"n_prompts must be between 2 and {_MAX_PROMPTS}, got {n_prompts}")
    if candidates < 3:
        raise ValueError(f"candidates must be at least 3, got {candidates}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    prompts: dict[_Scene, None] = {}
    while len(prompts) < n_prompts:
        prompts.setdefault(_random_prompt(rng))
    order = list(prompts)
    qualities = [int(q) for q in rng.integers(1, 6, n_prompts)]
    perfect = [_render(p, q, size, rng) for p, q in zip(order, qualities)]
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, prompt in enumerate(order):
        lender = _most_different(i, order, rng)
        fixed = [_rate(prompt, prompt, qualities[i]), _rate(order[lender], prompt, qualities[lender])]
        drawn = _varied_candidates(rng, prompt, candidates - 2, fixed)
        pictures = [perfect[i], perfect[lender]] + [_render(s, q, size, rng) for s, q in drawn]
        ratings = fixed + [_rate(s, prompt, q) for s, q in drawn]
        group = f"p{i:04d}"
        for c, k in enumerate(rng.permutation(candidates)):
            name = f"images/{group}_c{c}.png"
            (Path(out_dir) / name).write_bytes(pictures[k])
            rows.append({"prompt": prompt.text(), "image": name, "group": group, **ratings[k]})
    path = Path(out_dir) / "ratings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
