"""Padding-free packing: the same rewards and the same training as the padded path, for decoders only."""

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.config import ModelConfig
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.models.text import build_text_model
from rewardlab.train.run import train

from conftest import tiny_config

TOLERANCE = 1e-5  # float32: packed and padded attention sum the same terms in a different order


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rewards_equal_padded_rewards(tiny_llama, attention):
    torch.manual_seed(0)
    model, tok = build_text_model(ModelConfig(backbone=tiny_llama, packing=True))
    model.hf_model.config._attn_implementation = attention
    model.eval()
    encoder = TextEncoder(tok, EncodingSpec(max_length=64))
    prompts = ["Q: hi ", "Q: a much longer question about the sky ", "Q: ok "]
    responses = ["A: hello there", "A: blue", "A: a long and winding answer that goes on"]
    items, _ = TextItems(encoder).encode_items(prompts, responses)
    padded_inputs = TextItems(encoder).collate(items)
    packed_inputs = TextItems(encoder, packing=True).collate(items)
    assert packed_inputs["input_ids"].shape == (1, sum(len(ids) for ids, _ in items))
    assert padded_inputs["input_ids"].numel() > packed_inputs["input_ids"].numel()  # the padding is gone
    with torch.no_grad():
        padded, packed = model(**padded_inputs), model(**packed_inputs)
    assert packed.shape == padded.shape == (3, 1)
    torch.testing.assert_close(packed, padded, rtol=0, atol=TOLERANCE)
    with torch.no_grad():  # and each equals the sequence scored alone
        alone = torch.cat([model(**TextItems(encoder).collate([item])) for item in items])
    torch.testing.assert_close(packed, alone, rtol=0, atol=TOLERANCE)


def test_packed_training_matches_padded_training(tiny_llama, pairs_file, tmp_path):
    weights = {}
    for packing in (False, True):
        cfg = tiny_config(tiny_llama, pairs_file, tmp_path / f"p{packing}", max_steps=2)
        cfg = type(cfg)(data=cfg.data, train=cfg.train, model=ModelConfig(backbone=tiny_llama, packing=packing))
        result = train(cfg)
        weights[packing] = load_file(result.model_dir / "model.safetensors")
        m = result.metrics
        assert m["tokens"] > 0 and (m["padded_tokens"] == m["tokens"] if packing else m["padded_tokens"] > m["tokens"])
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, rtol=0, atol=1e-5, msg=name)


def test_packing_refuses_encoders(tiny_bert):
    with pytest.raises(ValueError, match="model.packing: .* is a 'bert' model; padding-free packing works for "
                                         "decoders of these types: llama, qwen2"):
        build_text_model(ModelConfig(backbone=tiny_bert, packing=True))
