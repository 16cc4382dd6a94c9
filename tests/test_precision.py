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
