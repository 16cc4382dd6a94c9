"""mixed_precision=auto: a measured choice that never costs the model its weights."""

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
