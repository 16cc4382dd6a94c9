import math

import numpy as np
import pytest

from rewardlab.models.base import read_metadata
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    from conftest import write_jsonl

    d = tmp_path_factory.mktemp("scoring")
    rows = [{"prompt": f"q{i}", "chosen": f"a helpful answer {i}", "rejected": "no."} for i in range(12)]
    path = write_jsonl(d / "p.jsonl", rows)
    return str(train(tiny_config(tiny_bert, path, d / "run", max_steps=3)).model_dir)


def test_score_batch_order_and_batching_do_not_matter(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    prompts = ["short", "a much longer prompt " * 5, "mid length prompt"]
    responses = ["x", "y " * 30, "zz"]
    batched = rm.score_batch(prompts, responses, batch_size=2)
    singles = [rm.score(p, r) for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(singles, abs=1e-5)
    reversed_ = rm.score_batch(prompts[::-1], responses[::-1])
    assert reversed_[::-1] == pytest.approx(batched, abs=1e-5)
    assert rm.score_batch([], []) == []


def test_rank_best_of_n_and_normalisation(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    responses = ["no.", "a helpful answer 3", "maybe"]
    ranked = rm.rank("q3", responses)
    raw = rm.score_batch(["q3"] * 3, responses)
    assert ranked.order == list(np.argsort(-np.asarray(raw))) and ranked.scores == sorted(raw, reverse=True)
    assert rm.best_of_n("q3", responses) == (ranked.order[0], responses[ranked.order[0]])
    meta = read_metadata(trained)
    z = rm.score("q3", "maybe", normalize="zscore")
    assert z == pytest.approx((rm.score("q3", "maybe") - meta["reward_mean"]) / meta["reward_std"], rel=1e-6)
    assert 0 < rm.score("q3", "maybe", normalize="sigmoid") < 1
    with pytest.raises(ValueError, match="normalize='minmax'; choose one of none, zscore, sigmoid"):
        rm.score("q", "a", normalize="minmax")


def test_preference_probability_uses_temperature(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    a, b = "a helpful answer 1", "no."
    margin = rm.score("q1", a) - rm.score("q1", b)
    assert rm.preference_probability("q1", a, b) == pytest.approx(1 / (1 + math.exp(-margin)), rel=1e-6)
    rm.temperature = 2.0
    assert rm.preference_probability("q1", a, b) == pytest.approx(1 / (1 + math.exp(-margin / 2)), rel=1e-6)
    assert rm.preference_probability("q1", a, b) + rm.preference_probability("q1", b, a) == pytest.approx(1.0)


def test_input_errors(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    with pytest.raises(ValueError, match="got 2 prompts but 1 responses"):
        rm.score_batch(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="item 0: the prompt must be a string, got NoneType"):
        rm.score_batch([None], ["c"])
    with pytest.raises(TypeError, match="item 1: a text reward model scores text responses, got int"):
        rm.score_batch(["a", "b"], ["c", 3])
    with pytest.raises(ValueError, match="best_of_n needs at least one response"):
        rm.best_of_n("q", [])
    with pytest.raises(ValueError, match=r"item 1: the response is not valid Unicode: a lone surrogate \(U\+DC00\)"):
        rm.score_batch(["a", "b"], ["c", "d" + chr(0xDC00)])
    with pytest.raises(ValueError, match=r"item 0: the prompt is not valid Unicode"):
        rm.score(chr(0xD800), "c")


def test_a_damaged_or_misnamed_model_folder_is_one_clear_error(trained, tmp_path):
    import shutil
    from pathlib import Path

    damaged = tmp_path / "damaged"
    shutil.copytree(trained, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ValueError, match=f"{damaged}: a weights file is damaged or cut short"):
        RewardModel.from_pretrained(str(damaged), device="cpu")
    run = Path(trained).parent
    with pytest.raises(ValueError, match=f"not a model folder .* keeps its model in {run / 'model'}"):
        RewardModel.from_pretrained(str(run), device="cpu")
    with pytest.raises(ValueError, match="model './no-such-run/model': no such folder or file"):
        RewardModel.from_pretrained("./no-such-run/model", device="cpu")


def test_foreign_hf_model_scores_without_metadata(tiny_bert):
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    assert rm.metadata == {} and isinstance(rm.score("q", "a"), float)
    with pytest.raises(ValueError, match="zscore' needs reward statistics"):
        rm.score("q", "a", normalize="zscore")
