import io
import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rewardlab.contracts.schema import DataError
from rewardlab.data.images import ImageRef, content_digest, image_ref, image_to_tensor, load_image
from rewardlab.data.synthetic_images import ATTRIBUTES, make_image_preferences

WHERE = "data.jsonl:7"


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    data = pytest.importorskip("skimage.data")  # scikit-image ships its sample photographs

    return png_bytes(Image.fromarray(data.astronaut()))  # a real photograph, 512 x 512 RGB


def ref(value, base_dir=None) -> ImageRef:
    return image_ref(value, where=WHERE, field="chosen", base_dir=base_dir)


def raises_here(match: str):
    return pytest.raises(DataError, match=rf"data\.jsonl:7, field 'chosen': .*{match}")


# --- image_ref -------------------------------------------------------------------------------------------

def test_image_ref_accepts_paths_urls_bytes_and_hub_dicts(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    absolute = str(tmp_path / "a.png")
    assert ref("a.png", base_dir=tmp_path).path == absolute
    assert ref(absolute).path == absolute and ref(tmp_path / "a.png").path == absolute
    assert ref("sub/../a.png", base_dir=tmp_path).key == f"path:{absolute}"
    assert ref("https://example.org/a.png").url == "https://example.org/a.png"
    assert ref("HTTP://example.org/b.jpg").key == "url:HTTP://example.org/b.jpg"
    assert ref(b"\x89PNG").data == b"\x89PNG" and ref(bytearray(b"ab")).data == b"ab"
    assert ref({"bytes": b"\x89PNG", "path": "ignored.png"}).data == b"\x89PNG"
    assert ref({"bytes": None, "path": "a.png"}, base_dir=tmp_path).path == absolute


def test_image_ref_identity_is_content_only(tmp_path):
    a = image_ref(b"same", where="f:1", field="chosen", base_dir=None)
    b = image_ref(b"same", where="g:9", field="rejected", base_dir=None)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.key == b.key != ref(b"other").key and len(a.key) == 40
    assert repr(ref(b"x" * 10**6)).startswith("ImageRef(data=<1000000 bytes, ")
    with pytest.raises(ValueError, match="exactly one"):
        ImageRef(path="/a.png", data=b"x")


@pytest.mark.parametrize("value, match", [
    (None, "expected an image path.*got NoneType"),
    (3, "got int"),
    (2.5, "got float"),
    (True, "got bool"),
    ("", "got an empty string"),
    ("   ", "got an empty string"),
    ([], "got list"),
    (b"", "bytes are empty"),
    ({}, "neither non-empty 'bytes' nor a 'path'"),
    ({"bytes": None, "path": None}, "neither"),
    ({"bytes": b"", "path": ""}, "neither"),
    ("s3://bucket/a.png", "only http\\(s\\) URLs and local paths"),
])
def test_image_ref_rejects_other_values(value, match):
    with raises_here(match):
        ref(value)


def test_image_ref_rejects_missing_files_and_folders(tmp_path):
    with raises_here(f"file does not exist: {tmp_path / 'nope.png'}"):
        ref("nope.png", base_dir=tmp_path)
    with raises_here("not a file"):
        ref(str(tmp_path))


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["bytes", "path", "url"]), inner),
    max_leaves=6))
def test_image_ref_on_junk_returns_a_ref_or_raises_data_error(value):
    try:
        result = image_ref(value, where=WHERE, field="chosen", base_dir=Path("/nonexistent-folder"))
    except DataError as err:
        assert err.location == WHERE and err.field_name == "chosen"
    else:
        assert isinstance(result, ImageRef)


# --- load_image ------------------------------------------------------------------------------------------

def test_load_image_reads_a_photo(tmp_path, astronaut_png):
    (tmp_path / "astronaut.png").write_bytes(astronaut_png)
    img = load_image(ref("astronaut.png", base_dir=tmp_path))
    assert img.mode == "RGB" and img.size == (512, 512)
    assert load_image(ref(astronaut_png)).tobytes() == img.tobytes()


def test_content_digest_is_shared_by_copies(tmp_path, astronaut_png):
    (tmp_path / "a.png").write_bytes(astronaut_png)
    (tmp_path / "b.png").write_bytes(astronaut_png)
    a, b = ref(tmp_path / "a.png"), ref(tmp_path / "b.png")
    assert a.key != b.key and content_digest(a) == content_digest(b) == ref(astronaut_png).key


@pytest.mark.parametrize("content, match", [
    (b"", "image is empty \\(0 bytes\\)"),
    (b"just some text, not a picture\n", "not an image"),
])
def test_load_image_rejects_empty_and_non_image_files(tmp_path, content, match):
    (tmp_path / "x.png").write_bytes(content)
    with raises_here(match):
        load_image(ref(tmp_path / "x.png"))


def test_load_image_rejects_truncated_files(tmp_path, astronaut_png):
    (tmp_path / "half.png").write_bytes(astronaut_png[: len(astronaut_png) // 2])
    with raises_here("cannot decode image \\(truncated or corrupt\\?\\)"):
        load_image(ref(tmp_path / "half.png"))


def test_load_image_limits_pixels_before_decoding_and_bytes(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(png_bytes(Image.new("RGB", (64, 64))))
    with raises_here("too large \\(more than max_pixels=100 pixels\\).*\\(64x64\\)"):
        load_image(ref(tmp_path / "big.png"), max_pixels=100)
    with raises_here("more than the limit of 10 bytes"):
        load_image(ref(tmp_path / "big.png"), max_bytes=10)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own bomb check must not fire first
    assert load_image(ref(tmp_path / "big.png"), max_pixels=5000).size == (64, 64)


def test_load_image_file_deleted_after_parsing(tmp_path):
    (tmp_path / "gone.png").write_bytes(b"x")
    r = ref(tmp_path / "gone.png")
    (tmp_path / "gone.png").unlink()
    with raises_here("file does not exist"):
        load_image(r)


def test_load_image_converts_modes_to_rgb():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = load_image(ref(png_bytes(rgba)))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)
    palette = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert load_image(ref(png_bytes(palette))).getpixel((2, 2)) == (10, 200, 30)
    assert load_image(ref(png_bytes(Image.new("L", (4, 4), 77)))).getpixel((0, 0)) == (77, 77, 77)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))  # 16-bit grey
    assert load_image(ref(png_bytes(deep))).getpixel((0, 0)) == (255, 255, 255)


def test_load_image_applies_exif_rotation():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buffer, format="JPEG", exif=exif)
    assert load_image(ref(buffer.getvalue())).size == (20, 40)


def test_load_image_from_a_url(monkeypatch, astronaut_png):
    seen = {}

    def fake_urlopen(request, timeout):
        seen.update(url=request.full_url, timeout=timeout)
        return io.BytesIO(astronaut_png)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert load_image(ref("https://example.org/a.png"), timeout=3.0).size == (512, 512)
    assert seen == {"url": "https://example.org/a.png", "timeout": 3.0}
    with raises_here("more than the limit of 100 bytes \\(max_bytes\\): https://example.org/a.png"):
        load_image(ref("https://example.org/a.png"), max_bytes=100)


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), TimeoutError("timed out")])
def test_load_image_reports_fetch_failures(monkeypatch, error):
    def failing_urlopen(request, timeout):
        raise error

    monkeypatch.setattr(urllib.request, "urlopen", failing_urlopen)
    with raises_here("could not fetch https://example.org/a.png"):
        load_image(ref("https://example.org/a.png"))


# --- image_to_tensor -------------------------------------------------------------------------------------

def test_image_to_tensor_resizes_the_short_side_and_centre_crops():
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 0, 0), (100, 0, 200, 100))  # a red middle third, blue sides
    tensor = image_to_tensor(img, 32)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert torch.allclose(tensor[:, 4:-4, 4:-4].mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    with pytest.raises(ValueError, match="size must be a positive"):
        image_to_tensor(img, 0)


# --- make_image_preferences ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_image_preferences(tmp_path_factory.mktemp("syn"), n_prompts=10, seed=3)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_synthetic_files_and_rows(synthetic):
    rows = read_rows(synthetic)
    assert len(rows) == 60 and list(rows[0]) == ["prompt", "image", "group", *ATTRIBUTES]
    groups = [r["group"] for r in rows]
    assert groups == sorted(groups) and len(set(groups)) == 10  # rows of a prompt together
    assert len({r["prompt"] for r in rows}) == 10
    for r in rows[:6]:
        img = load_image(ref(r["image"], base_dir=synthetic.parent))
        assert img.size == (64, 64)
    assert all(r[a] in (1.0, 2.0, 3.0, 4.0, 5.0) for r in rows for a in ATTRIBUTES)


def test_synthetic_is_deterministic_given_the_seed(synthetic, tmp_path):
    again = make_image_preferences(tmp_path / "same", n_prompts=10, seed=3)
    assert again.read_bytes() == synthetic.read_bytes()
    first = read_rows(synthetic)[0]["image"]
    assert (again.parent / first).read_bytes() == (synthetic.parent / first).read_bytes()
    other = make_image_preferences(tmp_path / "other", n_prompts=10, seed=4)
    assert other.read_bytes() != synthetic.read_bytes()


def test_synthetic_ratings_vary_within_every_prompt(synthetic):
    by_group = defaultdict(list)
    for r in read_rows(synthetic):
        by_group[r["group"]].append(r)
    for rows in by_group.values():
        assert all(len({r[a] for r in rows}) > 1 for a in ATTRIBUTES)
        assert any(all(r[a] == 5.0 for a in ATTRIBUTES if a != "fidelity") for r in rows)  # a perfect picture


def test_synthetic_same_picture_is_good_for_one_prompt_and_bad_for_another(synthetic):
    by_bytes = defaultdict(list)
    for r in read_rows(synthetic):
        by_bytes[(synthetic.parent / r["image"]).read_bytes()].append(r)
    shared = [rows for rows in by_bytes.values() if len({r["prompt"] for r in rows}) > 1]
    assert shared
    found = False
    for rows in shared:
        own = [r for r in rows if all(r[a] == 5.0 for a in ("spatial", "iconography", "style", "material"))]
        for r in rows:
            assert r["fidelity"] == rows[0]["fidelity"]  # the same pixels: the same quality
            if own and r["prompt"] != own[0]["prompt"]:
                found |= all(r[a] < own[0][a] for a in ("spatial", "iconography", "style"))
    assert found


def test_synthetic_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="candidates must be at least 3, got 2"):
        make_image_preferences(tmp_path, n_prompts=4, candidates=2)
    with pytest.raises(ValueError, match="n_prompts must be between 2 and 14400, got 1"):
        make_image_preferences(tmp_path, n_prompts=1)
