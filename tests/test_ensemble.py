"""Ensembles: K members trained and saved as one folder, mean / std / conservative scores, uncertainty metrics."""

import json

import numpy as np
import pytest

from rewardlab.evaluation.ensemble import uncertainty_metrics
from rewardlab.scoring import RewardModel
from rewardlab.train.ensemble import train_ensemble

from conftest import tiny_config


def test_uncertainty_metrics_closed_form():
    # 3 members, 4 pairs: pair 3 is misranked by the mean and is the one the members disagree on most
    margins = np.array([[1.0, 2.0, 0.5, 1.0], [1.2, 2.1, 0.4, -3.0], [0.8, 1.9, 0.6, 1.5]])
    m = uncertainty_metrics(margins)
    assert m["accuracy"] == 0.75 and m["member_accuracy"] == [1.0, 0.75, 1.0]
    assert m["std_auroc_for_errors"] == 1.0  # the error has the largest spread
    assert m["accuracy_without_most_uncertain_25pct"] == 1.0 and m["accuracy_without_most_uncertain_10pct"] == 0.75


def test_an_ensemble_trains_saves_as_one_folder_scores_and_serves(tiny_bert, pairs_file, tmp_path):
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "ens", epochs=2, ensemble_size=3, ensemble_bootstrap=True)
    result = train_ensemble(cfg)
    folder = result.model_dir
    meta = json.loads((folder / "config.json").read_text())["rewardlab"]
    assert meta["kind"] == "ensemble" and meta["members"] == 3 and meta["member_kind"] == "text"
    # each member is a plain transformers folder
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(folder / "member-1").config.num_labels == 1
    ev = result.metrics["eval"]
    assert ev["members"] == 3 and len(ev["member_accuracy"]) == 3 and "std_auroc_for_errors" in ev

    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    prompts, texts = ["Question number 1: how do I do task 1?"] * 2, ["Do step one, then step 1.", "Nope 1."]
    members = np.array([RewardModel(m, rm.processor, {"kind": "text"}).score_batch(prompts, texts)
                        for m in rm.model.members])  # (K, N)
    u = rm.score_uncertainty(prompts, texts, lam=2.0)
    assert u["mean"] == pytest.approx(members.mean(0).tolist(), abs=1e-5)
    assert u["std"] == pytest.approx(members.std(0).tolist(), abs=1e-5) and min(u["std"]) > 0  # members differ
    assert u["conservative"] == pytest.approx((members.mean(0) - 2 * members.std(0)).tolist(), abs=1e-5)
    assert u["min"] == pytest.approx(members.min(0).tolist(), abs=1e-5)
    assert rm.score_batch(prompts, texts) == pytest.approx(u["mean"], abs=1e-5)

    from rewardlab.serve.app import create_app
    from rewardlab.serve.config import ServeConfig
    from test_serve import post, serving

    with serving(create_app({"default": rm}, ServeConfig())) as (url, _):
        code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": p, "response": t} for p, t in zip(prompts, texts)],
                                                  "uncertainty_lambda": 2.0})
        assert code == 200 and reply["scores"] == pytest.approx(u["mean"], abs=1e-5)
        assert reply["uncertainty"]["std"] == pytest.approx(u["std"], abs=1e-5)
        assert reply["uncertainty"]["conservative"] == pytest.approx(u["conservative"], abs=1e-5)
        code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": "q", "response": "a"}],
                                                  "uncertainty_lambda": -1})
        assert code == 422 and "uncertainty_lambda" in reply["detail"]


def test_ensemble_options_are_checked(tiny_bert, pairs_file, tmp_path):
    with pytest.raises(ValueError, match="train.ensemble_size=0 must be > 0"):
        tiny_config(tiny_bert, pairs_file, tmp_path, ensemble_size=0)
    with pytest.raises(ValueError, match="an ensemble needs at least 2 members"):
        train_ensemble(tiny_config(tiny_bert, pairs_file, tmp_path))
    with pytest.raises(ValueError, match="an ensemble is trained member by member"):
        from rewardlab.train.run import train
        import dataclasses

        cfg = tiny_config(tiny_bert, pairs_file, tmp_path)
        train(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="ensemble")))
