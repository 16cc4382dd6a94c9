"""Image inputs: parse a data cell into an :class:`ImageRef`, load it safely, make a tensor.

Parsing is cheap (no decoding), so a data set of a million rows can be checked
before training starts; :func:`load_image` does the expensive, untrusted work and
turns every way an image can be broken into a :class:`DataError` that names the
file, the row and the column.

Example::

    ref = image_ref("cat.png", where="data.jsonl:3", field="chosen", base_dir=Path("/data"))
    tensor = image_to_tensor(load_image(ref), 224)  # (3, 224, 224) in [0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import io
import os
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rewardlab.contracts.schema import DataError

MAX_PIXELS = 40_000_000
MAX_BYTES = 50 * 2**20
_EXPECTED = "expected an image path, an http(s) URL, encoded image bytes or a {'bytes': ..., 'path': ...} dict"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class ImageRef:
    """One image as a data row named it: exactly one of ``path``, ``url`` or ``data``.

    Attributes:
        path: absolute path of a local file.
        url: an http(s) address.
        data: the encoded bytes (PNG, JPEG, ...) themselves.
        where: ``file:row`` of the row, for error messages (not part of equality).
        field: the column that held the image, for error messages (not part of equality).
    """

    path: str | None = None
    url: str | None = None
    data: bytes | None = None
    where: str = dataclasses.field(default="", compare=False)
    field: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.path, self.url, self.data)) != 1:
            raise ValueError("an ImageRef needs exactly one of path, url or data")

    def __repr__(self) -> str:  # never print megabytes of image bytes into a log
        if self.data is not None:
            what = f"data=<{len(self.data)} bytes, {self.key[:12]}...>"
        else:
            what = f"path={self.path!r}" if self.path is not None else f"url={self.url!r}"
        return f"ImageRef({what}, where={self.where!r}, field={self.field!r})"

    @functools.cached_property
    def key(self) -> str:
        """A stable identity: the digest of the bytes, or ``path:...`` / ``url:...``."""
        if self.data is not None:
            return _digest(self.data)
        return f"path:{self.path}" if self.path is not None else f"url:{self.url}"


def image_ref(value: object, *, where: str, field: str, base_dir: Path | None) -> ImageRef:
    """Parse one cell: a path, an http(s) URL, bytes, or a Hugging Face ``{"bytes", "path"}`` dict.

    Relative paths are resolved against ``base_dir`` (the data file's folder; the
    working directory when ``None``). Only a missing file is detected here; the
    image itself is checked by :func:`load_image`.

    Raises:
        DataError: the value is none of the accepted forms, or names a missing file.
    """
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return ImageRef(data=bytes(data), where=where, field=field)
        if isinstance(path, str) and path.strip():
            return image_ref(path, where=where, field=field, base_dir=base_dir)
        raise DataError(where, field, f"{_EXPECTED}; this dict has neither non-empty 'bytes' nor a 'path'")
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise DataError(where, field, "the image bytes are empty")
        return ImageRef(data=bytes(value), where=where, field=field)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise DataError(where, field, f"{_EXPECTED}, got {got}")
    if value.lower().startswith(("http://", "https://")):
        return ImageRef(url=value, where=where, field=field)
    if "://" in value:
        raise DataError(where, field, f"only http(s) URLs and local paths are supported, got {value[:80]!r}")
    path = os.path.abspath(Path(base_dir or ".", value))
    if not os.path.isfile(path):
        reason = "not a file (a folder?)" if os.path.isdir(path) else "file does not exist"
        raise DataError(where, field, f"{reason}: {path}")
    return ImageRef(path=path, where=where, field=field)


def _name(ref: ImageRef) -> str:
    return ref.path or ref.url or "inline bytes"


def _read_bytes(ref: ImageRef, *, max_bytes: int, timeout: float) -> bytes:
    """The encoded image, from memory, disk or the network, at most ``max_bytes`` long."""

    def fail(message: str) -> DataError:
        return DataError(ref.where, ref.field, message)

    limit = f"more than the limit of {max_bytes} bytes (max_bytes)"
    if ref.data is not None:
        data = ref.data
    elif ref.path is not None:
        try:
            size = os.path.getsize(ref.path)
            if size > max_bytes:
                raise fail(f"file is {size} bytes, {limit}: {ref.path}")
            data = Path(ref.path).read_bytes()
        except FileNotFoundError:
            raise fail(f"file does not exist: {ref.path}") from None
        except OSError as err:
            raise fail(f"cannot read {ref.path}: {err.strerror or err}") from None
    else:
        request = urllib.request.Request(ref.url, headers={"User-Agent": "rewardlab"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(max_bytes + 1)
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, timeouts: OSError
            raise fail(f"could not fetch {ref.url}: {err}") from None
    if len(data) > max_bytes:
        raise fail(f"image is {limit}: {_name(ref)}")
    if not data:
        raise fail(f"image is empty (0 bytes): {_name(ref)}")
    return data


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and 16-bit / float grey scaled to 8 bits."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        grey = np.asarray(img, dtype=np.float64)
        peak = grey.max(initial=0.0)
        if img.mode == "F":
            grey = grey * 255.0 if peak <= 1.0 else grey
        elif img.mode.startswith("I;16") or peak > 255:
            grey = grey / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    if img.has_transparency_data:  # an alpha band, or a transparent palette entry / colour
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(ref: ImageRef, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES,
               timeout: float = 20.0) -> Image.Image:
    """Read, check and decode an image to RGB.

    The size in the header is checked against ``max_pixels`` before any pixel is
    decoded, so a decompression bomb costs nothing (Pillow's global
    ``Image.MAX_IMAGE_PIXELS`` is raised to ``max_pixels`` where it is lower, so
    that its own check cannot reject an image first); the image is fully decoded
    here, so a truncated file fails now rather than inside a training step. EXIF
    rotation is applied: photos are seen as their raters saw them.

    Args:
        ref: the image to load.
        max_pixels: largest width * height accepted.
        max_bytes: largest encoded size accepted (file or download).
        timeout: seconds to wait for a URL.

    Raises:
        DataError: missing, empty, too large, unreadable, truncated or not an image.
    """
    data = _read_bytes(ref, max_bytes=max_bytes, timeout=timeout)
    # Pillow warns above its limit and raises at twice it; neither may fire below ours.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    name = _name(ref)
    too_large = f"image is too large (more than max_pixels={max_pixels} pixels): {name}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise DataError(ref.where, ref.field, f"{too_large} ({width}x{height})")
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(ref.where, ref.field, too_large) from None
    except UnidentifiedImageError:
        raise DataError(ref.where, ref.field, f"not an image, or a format Pillow cannot read: {name}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(ref.where, ref.field, f"cannot decode image (truncated or corrupt?): {name}: {err}") from None


def content_digest(ref: ImageRef, *, max_bytes: int = MAX_BYTES, timeout: float = 20.0) -> str:
    """A digest of the image's bytes: two copies of one file share it (an embedding-cache key).

    Raises:
        DataError: the bytes cannot be read (see :func:`load_image`).
    """
    return _digest(_read_bytes(ref, max_bytes=max_bytes, timeout=timeout))


def image_to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bicubic), centre-crop, scale to [0, 1].

    Example:
        >>> image_to_tensor(Image.new("RGB", (640, 480)), 224).shape
        torch.Size([3, 224, 224])

    Returns:
        A float32 tensor of shape (3, size, size).
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.convert("RGB").resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    pixels = np.array(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (3, H, W)
