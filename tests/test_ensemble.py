"""Ensembles: K members trained and saved as one folder, mean / std / conservative scores, uncertainty metrics."""

import dataclasses
import json

import numpy as np
import pytest

from rewardlab.evaluation.ensemble import uncertainty_metrics
from rewardlab.scoring import RewardModel
from rewardlab.train.ensemble import train_ensemble
from rewardlab.train.run import train

from conftest import tiny_config, write_jsonl


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
        cfg = tiny_config(tiny_bert, pairs_file, tmp_path)
        train(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="ensemble")))
    cfg = tiny_config(tiny_bert, pairs_file, tmp_path, ensemble_size=2)
    with pytest.raises(ValueError, match="model.kind=judge has no heads to give each member one"):
        train_ensemble(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="judge"),
                                           train=dataclasses.replace(cfg.train, ensemble_shared_backbone=True)))


def test_cross_validation_trains_an_ensemble_per_fold(tiny_bert, pairs_file, tmp_path, capsys):
    from rewardlab.cli import main
    from rewardlab.train.experiment import cross_validate

    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "cv", epochs=2, ensemble_size=2, ensemble_bootstrap=True)
    summary = cross_validate(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, folds=2, eval_fraction=0)))
    assert summary["folds"] == 2 and [f["pairs"] for f in summary["per_fold"]] == [20, 20]  # 40 pairs, held out once
    for k, fold in enumerate(summary["per_fold"]):  # each fold's ensemble, judged on its own held-out fold
        assert fold["members"] == 2 and len(fold["member_accuracy"]) == 2
        rm = RewardModel.from_pretrained(str(tmp_path / "cv" / f"fold-{k}" / "model"), device="cpu")
        assert rm.is_ensemble and len(rm.model.members) == 2
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in summary["per_fold"]]))
    # `rewardlab eval` on the run evaluates each fold's ensemble on its own fold
    assert main(["eval", "--model", str(tmp_path / "cv"), "--data", str(pairs_file), "--out",
                 str(tmp_path / "cv" / "eval")]) == 0
    evaluated = json.loads((tmp_path / "cv" / "eval" / "cv_metrics.json").read_text())
    assert [f["pairs"] for f in evaluated["per_fold"]] == [20, 20]


def test_a_shared_backbone_ensemble_scores_every_member_in_one_pass(tiny_bert, pairs_file, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = tiny_config(tiny_bert, pairs_file, tmp_path / "heads", epochs=2, ensemble_size=3, ensemble_bootstrap=True,
                      ensemble_shared_backbone=True)
    result = train_ensemble(cfg)
    folder = result.model_dir
    meta = json.loads((folder / "config.json").read_text())["rewardlab"]
    assert meta["kind"] == "text" and meta["ensemble_heads"] == 3
    assert meta["heads"] == ["member-00", "member-01", "member-02", "aggregate"]
    # one plain transformers model with a column per member (the mean's weights are in config.json)
    assert AutoModelForSequenceClassification.from_pretrained(folder).config.num_labels == 3
    assert result.metrics["eval"]["members"] == 3 and "std_auroc_for_errors" in result.metrics["eval"]

    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    assert rm.is_ensemble and rm.heads == ("reward",) and len(rm.model.members) == 3
    prompts, texts = ["Question number 1: how do I do task 1?"] * 2, ["Do step one, then step 1.", "Nope 1."]
    batch = rm.processor.collate(rm.processor.encode_items(prompts, texts)[0])
    calls = []
    hook = rm.model.base.register_forward_hook(lambda *_: calls.append(1))
    members = rm.model.member_rewards(**batch)
    hook.remove()
    assert members.shape == (3, 2, 1) and len(calls) == 1  # one forward pass for all members
    torch.testing.assert_close(rm.model(**batch), members.mean(0), atol=1e-5, rtol=0)
    u = rm.score_uncertainty(prompts, texts)
    singles = np.array([RewardModel(m, rm.processor, {"kind": "text"}).score_batch(prompts, texts)
                        for m in rm.model.members])
    assert u["std"] == pytest.approx(singles.std(0).tolist(), abs=1e-5) and min(u["std"]) > 0  # the heads differ
    assert rm.score_batch(prompts, texts) == pytest.approx(u["mean"], abs=1e-5)
    assert rm.score_batch(prompts, texts, normalize="zscore") is not None


def test_shared_backbone_members_see_their_own_bootstrap_weights(tmp_path):
    from rewardlab.contracts.schema import Comparison, Pair
    from rewardlab.models.ensemble import member_pairs

    comps = [Comparison(f"p{i}", ("a", "b"), (Pair(0, 1, weight=2.0),), source=f"f:{i}") for i in range(200)]
    plain = member_pairs(comps, 3, bootstrap=False, seed=0)
    assert [(p.attribute, p.weight) for p in plain[0].pairs] == [("member-00", 2.0), ("member-01", 2.0),
                                                                  ("member-02", 2.0)]
    boot = member_pairs(comps, 3, bootstrap=True, seed=0)
    weights = {h: [p.weight / 2 for c in boot for p in c.pairs if p.attribute == h] for h in ("member-00", "member-01")}
    assert 0.8 < sum(weights["member-00"]) / 200 < 1.2  # Poisson(1): the same expected weight as the data
    assert weights["member-00"] != weights["member-01"] and boot == member_pairs(comps, 3, bootstrap=True, seed=0)
    rated = [Comparison("p", ("a", "b"), (Pair(0, 1, attribute="style"),), source="f.jsonl:7")]
    with pytest.raises(ValueError, match=r"f.jsonl:7: .* attribute 'style'"):
        member_pairs(rated, 2, bootstrap=False, seed=0)


def test_an_ensemble_of_pairwise_models_averages_their_probabilities(tiny_bert, tmp_path):
    from rewardlab.serve.app import create_app
    from rewardlab.serve.config import ServeConfig
    from test_serve import post, serving
    from test_ties import _ab_rows

    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows())
    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=2, loss="three_class", ensemble_size=2)
    result = train_ensemble(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="cross_encoder")))
    held_out = result.metrics["eval"]
    assert held_out["members"] == 2 and len(held_out["member_accuracy"]) == 2 and held_out["pairs"] > 0
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    assert rm.is_ensemble and rm.kind.name == "cross_encoder"
    a, b = "Do step 5, then check the result carefully.", "I'm sorry, I can't help."
    members = [RewardModel.from_pretrained(str(result.model_dir / f"member-{k}"), device="cpu").compare("Task 5?", a, b)
               for k in range(2)]
    assert members[0] != pytest.approx(members[1], abs=1e-4)  # different seeds, different judges
    expected = {o: (members[0][o] + members[1][o]) / 2 for o in ("a", "b", "tie")}
    assert rm.compare("Task 5?", a, b) == pytest.approx(expected, abs=1e-5)  # the mean of their probabilities
    with serving(create_app({"default": rm}, ServeConfig())) as (url, _):
        code, reply, _ = post(f"{url}/v1/compare", {"items": [{"prompt": "Task 5?", "response_a": a, "response_b": b}]})
        assert code == 200 and reply["probabilities"][0] == pytest.approx(expected, abs=1e-5)
        code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": "Task 5?", "response": a}]})
        assert code == 422 and "is pairwise (model.kind=cross_encoder)" in reply["detail"]
    from rewardlab.evaluation.run import evaluate

    report = evaluate(str(result.model_dir), str(data), tmp_path / "eval", n_boot=10, progress=False)
    assert report.metrics["outcomes"]["pairs"] == 24 and report.metrics["ensemble"]["pairs"] == 16  # decided pairs
    member = evaluate(str(result.model_dir / "member-1"), str(data), tmp_path / "eval-1", n_boot=10, progress=False)
    overall = member.metrics["overall"]["accuracy"]["value"]
    assert report.metrics["ensemble"]["member_accuracy"][1] == pytest.approx(overall)  # each member judged as alone


def test_three_class_judges_each_pair_on_its_own_heads_three_logits():
    import torch

    from rewardlab.contracts.batch import PairTable
    from rewardlab.models.outcomes import ThreeClass

    torch.manual_seed(0)
    rewards = torch.randn(4, 9)  # three groups of (first, second, tie) logits
    pairs = PairTable.of(2, i=[0, 2], j=[1, 3], head=[3, 6])
    judged = ThreeClass()(rewards, pairs)
    for p, start in enumerate((3, 6)):  # the same as reading that group alone
        alone = ThreeClass()(rewards[:, start: start + 3], PairTable.of(1, i=[2 * p], j=[2 * p + 1], head=[0]))
        torch.testing.assert_close(judged.log_probs[p], alone.log_probs[0])


def test_a_shared_backbone_ensemble_of_cross_encoders_averages_its_heads_probabilities(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rewardlab.evaluation.run import evaluate
    from rewardlab.serve.app import create_app
    from rewardlab.serve.config import ServeConfig
    from test_serve import post, serving
    from test_ties import _ab_rows

    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows())
    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=2, loss="three_class", ensemble_size=3,
                      ensemble_bootstrap=True, ensemble_shared_backbone=True)
    result = train_ensemble(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="cross_encoder")))
    folder = result.model_dir
    assert result.metrics["eval"]["members"] == 3 and len(result.metrics["eval"]["member_accuracy"]) == 3
    # one plain transformers model: an A / B / tie group of labels per member
    hf = AutoModelForSequenceClassification.from_pretrained(folder)
    assert hf.config.num_labels == 9 and [hf.config.id2label[i] for i in (0, 4, 8)] == [
        "member-00:first", "member-01:second", "member-02:tie"]
    assert json.loads((folder / "config.json").read_text())["rewardlab"]["ensemble_heads"] == 3

    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    assert rm.is_ensemble and rm.kind.name == "cross_encoder" and rm.heads == ("first", "second", "tie")
    a, b = "Do step 5, then check the result carefully.", "I'm sorry, I can't help."
    batch = rm.processor.collate(rm.processor.encode_items(["Task 5?"] * 2, [(a, b), (b, a)])[0])
    calls = []
    hook = rm.model.base.register_forward_hook(lambda *_: calls.append(1))
    members = rm.model.member_rewards(**batch)
    hook.remove()
    assert members.shape == (3, 2, 3) and len(calls) == 1  # one forward pass for all members
    singles = [RewardModel(m, rm.processor, rm.metadata).compare("Task 5?", a, b) for m in rm.model.members]
    assert singles[0] != pytest.approx(singles[1], abs=1e-4)  # the heads differ
    expected = {o: np.mean([s[o] for s in singles]) for o in ("a", "b", "tie")}
    assert rm.compare("Task 5?", a, b) == pytest.approx(expected, abs=1e-5)  # the mean of their probabilities
    with serving(create_app({"default": rm}, ServeConfig())) as (url, _):
        code, reply, _ = post(f"{url}/v1/compare", {"items": [{"prompt": "Task 5?", "response_a": a, "response_b": b}]})
        assert code == 200 and reply["probabilities"][0] == pytest.approx(expected, abs=1e-5)
    report = evaluate(str(folder), str(data), tmp_path / "eval", n_boot=10, progress=False)
    assert report.metrics["outcomes"]["pairs"] == 24 and report.metrics["ensemble"]["members"] == 3
    assert report.metrics["ensemble"]["pairs"] == 16  # its decided pairs, each judged by every member head
