"""Padding-free packing (decoders only) and padding to a multiple: the same rewards and the same training as
the batch padded to its longest item."""

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.config import ModelConfig
from rewardlab.data.collate import EncodedComparison
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.data.sampling import build_batch_sampler
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


@pytest.mark.parametrize("backbone", ["tiny_llama", "tiny_bert"])
def test_padding_to_a_multiple_keeps_every_reward(backbone, request):
    torch.manual_seed(0)
    model, tok = build_text_model(ModelConfig(backbone=request.getfixturevalue(backbone)))
    model.eval()
    encoder = TextEncoder(tok, EncodingSpec(max_length=64))
    items, _ = TextItems(encoder).encode_items(["Q: hi ", "Q: why is the sky blue? "], ["A: hello", "A: light"])
    longest = max(len(ids) for ids, _ in items)
    plain, bucketed = TextItems(encoder).collate(items), TextItems(encoder, pad_to_multiple_of=16).collate(items)
    assert plain["input_ids"].shape[1] == longest and bucketed["input_ids"].shape[1] == 16 * -(-longest // 16) > longest
    assert TextItems(encoder, pad_to_multiple_of=16).padded_cost([3, longest]) == bucketed["input_ids"].numel()
    with torch.no_grad():
        torch.testing.assert_close(model(**bucketed), model(**plain), rtol=0, atol=TOLERANCE)


def test_training_padded_to_a_multiple_matches_training_padded_to_the_longest(tiny_bert, pairs_file, tmp_path):
    weights, metrics = {}, {}
    for multiple in (1, 64):
        cfg = tiny_config(tiny_bert, pairs_file, tmp_path / f"m{multiple}", max_steps=2, pad_to_multiple_of=multiple,
                          eval_batch_size=3)
        result = train(cfg)
        weights[multiple], metrics[multiple] = load_file(result.model_dir / "model.safetensors"), result.metrics
    assert metrics[64]["padded_tokens"] > metrics[1]["padded_tokens"] and metrics[64]["padded_tokens"] % 64 == 0
    assert metrics[64]["tokens"] == metrics[1]["tokens"]
    assert metrics[64]["eval"]["accuracy"] == metrics[1]["eval"]["accuracy"]
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[64][name], value, rtol=0, atol=1e-5, msg=name)


def test_the_token_budget_counts_the_padded_width():
    from rewardlab.config import TrainConfig

    data = [EncodedComparison(items=(f"a{k}", f"b{k}"), costs=(n, n - 1), pairs=(), index=k)
            for k, n in enumerate([10, 20, 30, 40, 50, 60, 70])]
    for multiple in (1, 64):
        sampler = build_batch_sampler(data, TrainConfig(max_tokens_per_batch=256, batch_size=8,
                                                        pad_to_multiple_of=multiple))
        batches = sampler.batches()
        assert sorted(k for b in batches for k in b) == list(range(7))
        widths = [-(-max(data[k].longest for k in b) // multiple) * multiple for b in batches]
        assert all(2 * len(b) * w <= 256 for b, w in zip(batches, widths))
        if multiple == 64:  # 2 items x 64 wide: two comparisons a batch at most
            assert max(map(len, batches)) == 2
