"""Length debiasing: nuisance features in the batch, the slope penalty, the disentangled reward, length-matched
batches; and on a synthetic set where length and quality are independent, what each one learns."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, write_jsonl

from rewardlab.config import load_config
from rewardlab.contracts.batch import PairTable
from rewardlab.contracts.nuisance import FEATURES, feature_index, nuisance_of
from rewardlab.contracts.schema import Pair
from rewardlab.data.collate import EncodedComparison, LengthGroupedBatchSampler, PreferenceCollator
from rewardlab.data.encode import TextItems
from rewardlab.data.sampling import LengthMatchedBatchSampler, length_outcome
from rewardlab.losses import margin_feature_slope
from rewardlab.models.debias import fit_nuisance_weights
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train


# ----------------------------------------------------------------------------- a synthetic set


def reply(quality: str, filler: int) -> str:
    return f"{quality} answer" + " and more" * filler


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """Quality and length independent by construction: half the pairs are good over bad with lengths drawn
    independently; in the other half both replies have the same quality and the longer one wins. Preferences
    then follow length (75 % of pairs), but only the quality word says which reply is better."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        if k % 2 == 0:
            chosen, rejected = reply("good", rng.randint(0, 8)), reply("bad", rng.randint(0, 8))
        else:
            quality, (short, long) = rng.choice(["good", "bad"]), sorted(rng.sample(range(9), 2))
            chosen, rejected = reply(quality, long), reply(quality, short)
        rows.append({"prompt": f"question {k}", "chosen": chosen, "rejected": rejected})
    return rows


def effects(rm: RewardModel) -> tuple[float, float]:
    """(length effect, quality effect): the reward gained by 8 more filler phrases, and by 'good' over 'bad'."""
    grid = np.asarray([rm.score_batch(["question 3"] * 9, [reply(q, n) for n in range(9)]) for q in ("good", "bad")])
    return float((grid[:, 8] - grid[:, 0]).mean()), float((grid[0] - grid[1]).mean())


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("synthetic") / "train.jsonl", synthetic_pairs(240, 0))


def trained(tiny_bert, data: Path, out: Path, **train_options) -> RewardModel:
    """Trained without dropout, as bench/length_bias.py does: with the tiny model's 0.1 dropout the batch
    penalties' noise shrinks the quality margins, and the debiased reward kept most of the length effect."""
    cfg = tiny_config(tiny_bert, data, out, epochs=20, batch_size=16, **train_options)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_fraction=0.0),
                              model=dataclasses.replace(cfg.model, dropout=0.0))
    return RewardModel.from_pretrained(str(train(cfg).model_dir), device="cpu")


def test_plain_bt_learns_length_and_each_debiasing_option_does_not(tiny_bert, synthetic_file, tmp_path):
    plain = effects(trained(tiny_bert, synthetic_file, tmp_path / "plain"))
    assert plain[1] > 1.0 and plain[0] > 0.3 * plain[1], plain  # it ranks by quality, and by length too
    for name, option in {"debias": {"debias": "[length]"}, "penalty": {"length_penalty": 1.0}}.items():
        length, quality = effects(trained(tiny_bert, synthetic_file, tmp_path / name, **option))
        assert quality > 1.0 and abs(length) < 0.1 * quality, (name, length, quality)
    # Length-matched batches only rebalance which pairs are seen: the pairs where only length differs still
    # teach "longer wins", so the simple baseline lowers the length effect without removing it.
    length, quality = effects(trained(tiny_bert, synthetic_file, tmp_path / "matched", length_matched="true"))
    assert quality > 1.0 and length / quality < plain[0] / plain[1], (length, quality, plain)


def test_the_debiased_checkpoint_is_the_quality_model_alone(tiny_bert, synthetic_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rewardlab.data.encode import joined

    cfg = tiny_config(tiny_bert, synthetic_file, tmp_path / "run", max_steps=3, debias="[length]")
    result = train(cfg)
    fitted = result.metrics["data"]["debias"]["fitted_nuisance_weights"]["length"]
    assert fitted > 0.3  # longer wins 75 % of the pairs: the length-only reward rises with length
    meta = json.loads((result.model_dir / "config.json").read_text())["rewardlab"]
    assert meta["debias"]["features"] == ["length"]
    assert meta["debias"]["nuisance_weights"]["length"] == pytest.approx(fitted, abs=0.05)  # 3 steps trained it
    hf = AutoModelForSequenceClassification.from_pretrained(result.model_dir)  # a plain transformers folder
    assert hf.config.num_labels == 1 and not any("nuisance" in n for n, _ in hf.named_parameters())
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    tok = rm.processor.tokenizer
    enc = tok(joined("question 1", reply("good", 3), "\n"), return_tensors="pt")  # one text per reply
    with torch.no_grad():
        assert rm.score("question 1", reply("good", 3)) == pytest.approx(float(hf(**enc).logits[0, 0]), abs=1e-5)
    from rewardlab.evaluation.run import evaluate

    evaluation = evaluate(str(result.model_dir), str(synthetic_file), tmp_path / "eval", n_boot=20, progress=False)
    assert evaluation.metrics["length_bias"]["debias"]["features"] == ["length"]  # eval says which reward it scored
    assert "these scores are the quality reward only" in (tmp_path / "eval" / "report.html").read_text()


def test_debiased_image_models_train_save_and_load(tmp_path):
    from rewardlab.data.synthetic_images import make_image_preferences

    data = make_image_preferences(tmp_path / "images", n_prompts=6, candidates=3, size=32, seed=1)
    cfg = load_config(None, ["model.kind=multimodal", "model.backbone=dual", f"data.train={data}",
                             "data.split_by=group", f"train.output_dir={tmp_path / 'run'}",
                             f"multimodal.cache_dir={tmp_path / 'cache'}", "train.progress=false", "train.log_with=[]",
                             "train.batch_size=4", "train.max_steps=2", "multimodal.hidden=32",
                             "multimodal.attention_heads=2", "multimodal.layers=1", "multimodal.image_size=32",
                             "train.debias=[length]", "train.length_penalty=1.0"])
    result = train(cfg)
    assert result.metrics["data"]["debias"]["fitted_nuisance_weights"] == {"length": 0.0}  # pictures have no length
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    images = sorted((data.parent / "images").glob("*.png"))[:3]
    assert np.isfinite(rm.score_batch(["a red circle"] * 3, images)).all()


# ----------------------------------------------------------------------------- the pieces


def test_the_batch_carries_each_unique_items_nuisance_features():
    a = EncodedComparison((((1, 2), None), ((3,), None)), (2, 1), (Pair(0, 1),), 0, nuisance=((2.0,), (1.0,)))
    b = EncodedComparison((((3,), None), ((4,), None)), (1, 1), (Pair(1, 0),), 1, nuisance=((1.0,), (5.0,)))
    plain = PreferenceCollator(TextItems(pad_token_id=0))([a, b])
    assert plain["nuisance"].tolist() == [[2.0], [1.0], [5.0]] and "nuisance" not in plain["items"]
    told = PreferenceCollator(TextItems(pad_token_id=0), nuisance_to_model=True)([a, b])
    assert torch.equal(told["items"]["nuisance"], plain["nuisance"])
    legacy = EncodedComparison((((7,), None), ((8,), None)), (1, 1), (Pair(0, 1),), 2)  # built without features
    assert PreferenceCollator(TextItems(pad_token_id=0))([legacy])["nuisance"].tolist() == [[0.0], [0.0]]


def test_nuisance_features_are_log_lengths_and_unknown_names_are_refused():
    assert list(FEATURES) == ["length"]
    assert nuisance_of("abc") == pytest.approx((np.log(4.0),)) and nuisance_of(Path("x.png")) == (0.0,)
    with pytest.raises(ValueError, match="unknown nuisance feature 'markdown'; choose from length"):
        feature_index(["markdown"])
    with pytest.raises(ValueError, match=r"train.debias=\['markdown'\]: unknown nuisance feature"):
        load_config(None, ["train.debias=[markdown]"])
    with pytest.raises(ValueError, match="train.length_matched=true draws fixed-size batches"):
        load_config(None, ["train.length_matched=true", "train.max_tokens_per_batch=512"])
    with pytest.raises(ValueError, match="train.length_penalty=-1.0 must be >= 0"):
        load_config(None, ["train.length_penalty=-1"])


def test_margin_slope_is_the_regression_slope_and_ignores_pair_orientation():
    gen = torch.Generator().manual_seed(0)
    f = torch.rand(20, generator=gen) * 5
    quality = torch.randn(20, generator=gen)
    pairs = PairTable.of(10)
    gap = f[pairs.i] - f[pairs.j]
    for slope in (0.0, 0.5, -2.0):
        r = (slope * f)[:, None]  # a reward that is length alone has exactly that slope
        assert float(margin_feature_slope(r, pairs, f)) == pytest.approx(slope ** 2, abs=1e-5)
    r = (quality + 0.7 * f)[:, None]
    margin = r[pairs.i, 0] - r[pairs.j, 0]
    expected = float((margin * gap).sum() / gap.pow(2).sum()) ** 2
    assert float(margin_feature_slope(r, pairs, f)) == pytest.approx(expected, rel=1e-5)
    flipped = PairTable.of(10, i=torch.where(torch.arange(10) % 2 == 0, pairs.j, pairs.i),
                           j=torch.where(torch.arange(10) % 2 == 0, pairs.i, pairs.j))
    assert float(margin_feature_slope(r, flipped, f)) == pytest.approx(expected, rel=1e-5)
    assert float(margin_feature_slope(r, pairs, torch.ones(20))) == 0.0  # equal lengths (or images): nothing to say


def test_the_length_only_reward_is_fitted_by_maximum_likelihood():
    longer_wins = [EncodedComparison(("x", "y"), (1, 1), (Pair(0, 1),), k, nuisance=((3.0,), (1.0,)))
                   for k in range(9)]
    shorter_wins = [EncodedComparison(("x", "y"), (1, 1), (Pair(1, 0),), 9, nuisance=((3.0,), (1.0,)))]
    tie = [EncodedComparison(("x", "y"), (1, 1), (Pair(1, 0, tie=True),), 10, nuisance=((3.0,), (1.0,)))]
    # gap 2, longer wins 9 of 10: σ(2a) = 0.9, so a = log(9) / 2; ties say nothing about the direction
    assert fit_nuisance_weights(longer_wins + shorter_wins + tie, ["length"])[0] == pytest.approx(np.log(9) / 2, rel=1e-3)
    assert fit_nuisance_weights([], ["length"]) == [0.0]
    # length-matched batches show the longer and the shorter winning equally often: nothing for length to explain
    matched = fit_nuisance_weights(longer_wins + shorter_wins, ["length"], length_matched=True)
    assert matched[0] == pytest.approx(0.0, abs=1e-6)


def comparison(k: int, winner_len: float, loser_len: float) -> EncodedComparison:
    return EncodedComparison(((k,), (k + 1000,)), (1, 1), (Pair(0, 1),), k, nuisance=((winner_len,), (loser_len,)))


def test_length_outcome_reads_each_comparisons_decided_pairs():
    assert length_outcome(comparison(0, 3.0, 1.0)) == 1 and length_outcome(comparison(0, 1.0, 3.0)) == -1
    assert length_outcome(comparison(0, 2.0, 2.0)) == 0
    ranking = EncodedComparison(("a", "b", "c"), (1, 1, 1), (Pair(0, 1), Pair(0, 2), Pair(1, 2)), 0,
                                nuisance=((1.0,), (2.0,), (3.0,)))
    assert length_outcome(ranking) == -1  # the shortest reply ranked first: the shorter won all three pairs
    assert length_outcome(EncodedComparison(("a", "b"), (1, 1), (Pair(0, 1),), 0)) == 0  # no features


def test_length_matched_batches_balance_longer_and_shorter_wins():
    outcomes = [1] * 70 + [-1] * 20 + [0] * 10
    sampler = LengthMatchedBatchSampler(outcomes, batch_size=10, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        epochs.append(batches)
        assert len(batches) == len(sampler) == 10 and sum(map(len, batches)) == 100  # an epoch keeps its size
        for batch in batches:
            counts = [sum(outcomes[k] == s for k in batch) for s in (1, -1, 0)]
            assert abs(counts[0] - counts[1]) <= 1 and counts[2] <= 2, counts  # 4.5 : 4.5 : 1 on average
        drawn = [k for b in batches for k in b]
        assert set(k for k in drawn if outcomes[k] == -1) == set(range(70, 90))  # every minority pair, some twice
        assert set(k for k in drawn if outcomes[k] == 0) == set(range(90, 100))
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert sampler.batches() == epochs[0]  # (seed, epoch) fixes the batches: exact resume
    one_sided = LengthMatchedBatchSampler([1] * 7, batch_size=3)
    assert sorted(k for b in one_sided.batches() for k in b) == list(range(7))  # nothing to balance: plain batches
    lengths, keys = [5, 9, 9, 2, 7, 9, 4, 1], [3, 1, 2, 0, 5, 4, 7, 6]  # e.g. images, which have no length
    assert LengthMatchedBatchSampler([0] * 8, 3, lengths=lengths, keys=keys, seed=3).batches() == \
        LengthGroupedBatchSampler(lengths, 3, keys=keys, seed=3).batches()


def test_kinds_that_score_two_responses_at_once_refuse_the_length_options(tiny_bert, pairs_file, tmp_path):
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "run", max_steps=1, length_matched="true", loss="three_class")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="cross_encoder"))
    with pytest.raises(ValueError, match="train.length_matched reads each response's length, and "
                                         "model.kind=cross_encoder scores two responses at once"):
        train(cfg)
