"""mixed_precision=auto: a measured choice that never costs the model its weights; fused kernels (Liger)."""

import pytest
import torch

from rewardlab.config import ModelConfig, load_config
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.models.text import build_text_model
from rewardlab.train.precision import choose_precision, probe


def test_requested_precision_is_kept_and_auto_without_cuda_bf16_is_fp32():
    model = torch.nn.Linear(2, 1)
    never = lambda device: (_ for _ in ()).throw(AssertionError("no probe expected"))  # noqa: E731
    assert choose_precision("bf16", model, never, torch.device("cpu"))[0] == "bf16"
    choice, info = choose_precision("auto", model, never, torch.device("cpu"))
    assert choice == "no" and "no CUDA device" in info["rule"]
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML `no` stays text


def test_probe_times_both_and_leaves_the_model_as_it_was(tiny_bert):
    model, tok = build_text_model(ModelConfig(backbone=tiny_bert))
    items, _ = TextItems(TextEncoder(tok, EncodingSpec(max_length=32))).encode_items(["q"] * 4, ["a b c", "d", "e f", "g"])
    inputs = TextItems(TextEncoder(tok, EncodingSpec(max_length=32))).collate(items)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice, info = probe(model, inputs, torch.device("cpu"))
    assert choice in ("no", "bf16") and set(info["seconds_per_step"]) == {"no", "bf16"}
    assert choice == min(info["seconds_per_step"], key=info["seconds_per_step"].get)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_a_compiled_run_trains_and_saves_plain_weights(tiny_bert, pairs_file, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    from conftest import tiny_config
    from rewardlab.scoring import RewardModel
    from rewardlab.train.run import train

    compiled = train(tiny_config(tiny_bert, pairs_file, tmp_path / "c", compile=True, max_steps=4))
    eager = train(tiny_config(tiny_bert, pairs_file, tmp_path / "e", max_steps=4))
    keys = load_file(str(compiled.model_dir / "model.safetensors")).keys()
    assert keys == load_file(str(eager.model_dir / "model.safetensors")).keys()  # no `_orig_mod.` prefixes
    assert np.isfinite(compiled.metrics["eval"]["log_loss"])
    prompts, texts = ["Question number 1: how do I do task 1?"] * 2, ["Do step one, then step 1.", "Nope 1."]
    rm = RewardModel.from_pretrained(str(compiled.model_dir), device="cpu")
    scores = rm.score_batch(prompts, texts)
    # inference through the compiled graph matches eager (dropout is off in eval mode)
    batch = rm.processor.collate(rm.processor.encode_items(prompts, texts)[0])
    with torch.inference_mode():
        graph = torch.compile(rm.model, dynamic=True)(**batch)[:, -1]
    torch.testing.assert_close(graph, torch.tensor(scores, dtype=graph.dtype), atol=1e-4, rtol=0)


def test_liger_kernels_are_refused_off_cuda(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    from rewardlab.train.kernels import apply_liger

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with pytest.raises(ValueError, match="Triton GPU kernels, and this run is on cpu; set train.liger_kernel=false"):
        apply_liger(model, torch.device("cpu"))


def test_liger_kernels_patch_each_supported_backbone_without_the_lm_loss(monkeypatch):
    import sys
    import types

    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForSequenceClassification

    from rewardlab.train.kernels import apply_liger

    calls = []
    patch = types.SimpleNamespace(MODEL_TYPE_TO_APPLY_LIGER_FN={"llama": None, "qwen2": None},
                                  _apply_liger_kernel_to_instance=lambda model, **kw: calls.append((model, kw)))
    package = types.ModuleType("liger_kernel.transformers")
    package.monkey_patch = patch
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", package)
    llama = LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=1, num_attention_heads=2,
                                                       num_key_value_heads=2, num_labels=1, pad_token_id=0))
    wrapper = torch.nn.ModuleDict({"backbone": llama, "head": torch.nn.Linear(2, 1)})
    assert apply_liger(wrapper, torch.device("cuda")) == ["llama"]
    # the outermost transformers model only (not its inner LlamaModel), with no LM-head loss to fuse
    assert len(calls) == 1 and calls[0][0] is llama
    assert calls[0][1] == {"cross_entropy": False, "fused_linear_cross_entropy": False}
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(ValueError, match=r"no kernels for this model's backbone \(bert\); it supports llama, qwen2"):
        apply_liger(bert, torch.device("cuda"))
