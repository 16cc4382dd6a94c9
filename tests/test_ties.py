"""Tie-aware outcome models and losses (closed forms, limits, recovery), and the tie-aware and pairwise kinds end to end."""

import math
import random

import pytest
import torch
from transformers import AutoConfig

from rewardlab.contracts.batch import PairTable
from rewardlab.losses import build_pair_loss, outcome_model_for
from rewardlab.models.outcomes import (BradleyTerry, Davidson, RaoKupper, ThreeClass, get_outcome_model,
                                       outcome_from_metadata, outcome_to_metadata)
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import tiny_config, write_jsonl


def sig(x):
    return 1 / (1 + math.exp(-x))


def probs(model, d):
    return model.outcome_log_probs(torch.tensor([float(d)])).exp()[0].tolist()


def test_rao_kupper_closed_form():
    # P(i) = σ(d - η), P(j) = σ(-d - η), the rest is a tie
    p = probs(RaoKupper(eta=0.7), 1.2)
    assert p == pytest.approx([sig(0.5), sig(-1.9), 1 - sig(0.5) - sig(-1.9)], rel=1e-5)


def test_davidson_closed_form():
    # P(i) = p_i / (p_i + p_j + ν√(p_i p_j)) with p = e^r
    nu, ri, rj = 0.8, 1.0, -0.5
    pi, pj = math.exp(ri), math.exp(rj)
    z = pi + pj + nu * math.sqrt(pi * pj)
    assert probs(Davidson(nu=nu), ri - rj) == pytest.approx([pi / z, pj / z, nu * math.sqrt(pi * pj) / z], rel=1e-5)


@pytest.mark.parametrize("d", [-3.0, -0.4, 0.0, 1.7])
def test_tie_models_reduce_to_bradley_terry_at_their_limit(d):
    bt = probs(BradleyTerry(), d)
    for model in (RaoKupper(eta=1e-6), Davidson(nu=1e-9)):
        p = probs(model, d)
        assert p[:2] == pytest.approx(bt[:2], abs=1e-5) and p[2] == pytest.approx(0.0, abs=1e-5)
        assert sum(p) == pytest.approx(1.0, abs=1e-6)


def test_three_class_averages_both_orders():
    rewards = torch.tensor([[2.0, 0.0, 0.5], [0.3, 1.0, -1.0]])  # row 0: (w, l); row 1: (l, w)
    judged = ThreeClass()(rewards, PairTable.of(1, i=[0], j=[1]))
    first, second = rewards[0].softmax(0), rewards[1].softmax(0)
    expected = [(first[0] + second[1]) / 2, (first[1] + second[0]) / 2, (first[2] + second[2]) / 2]
    assert judged.log_probs.exp()[0].tolist() == pytest.approx([float(x) for x in expected], rel=1e-5)
    swapped = ThreeClass()(rewards, PairTable.of(1, i=[1], j=[0])).log_probs.exp()[0]
    assert swapped.tolist() == pytest.approx(judged.log_probs.exp()[0][[1, 0, 2]].tolist(), rel=1e-5)


def test_outcome_metadata_round_trip_and_registry():
    model = Davidson(nu=0.37)
    assert outcome_to_metadata(model) == {"name": "davidson", "nu": pytest.approx(0.37)}
    back = outcome_from_metadata(outcome_to_metadata(model))
    assert probs(back, 0.4) == pytest.approx(probs(model, 0.4), rel=1e-6)
    assert outcome_from_metadata(None).name == "bradley_terry"
    assert outcome_model_for("davidson") == "davidson" and outcome_model_for("focal") == "bradley_terry"
    with pytest.raises(ValueError, match="unknown outcome model 'x'; valid: bradley_terry, rao_kupper"):
        get_outcome_model("x")


def test_scalar_losses_treat_a_tie_as_both_orders():
    loss = build_pair_loss("bradley_terry")
    judged = BradleyTerry()(torch.tensor([[0.8], [0.0]]), PairTable.of(1, i=[0], j=[1]))
    tie = loss(judged, PairTable.of(1, tie=[True])).item()
    assert tie == pytest.approx(-(math.log(sig(0.8)) + math.log(sig(-0.8))) / 2, rel=1e-6)


@pytest.mark.parametrize("name,true", [("davidson", 0.6), ("rao_kupper", 0.8)])
def test_the_tie_parameter_is_recovered_from_simulated_outcomes(name, true):
    """Outcomes drawn from a tie model with known scores and parameter: maximum likelihood gets both back."""
    torch.manual_seed(0)
    scores = torch.tensor([1.0, 0.4, 0.0, -0.7])
    sim = get_outcome_model(name, **({"nu": true} if name == "davidson" else {"eta": true}))
    i, j = torch.combinations(torch.arange(4)).T.repeat(1, 1500)
    p = sim.outcome_log_probs(scores[i] - scores[j]).exp()
    outcome = torch.multinomial(p, 1).squeeze(1)  # 0: i wins, 1: j wins, 2: tie
    winner, loser = torch.where(outcome == 1, j, i), torch.where(outcome == 1, i, j)
    table = PairTable.of(len(i), i=winner, j=loser, tie=outcome == 2)
    fit, learned = get_outcome_model(name), torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([learned, *fit.parameters()], lr=0.05)
    loss_fn = build_pair_loss(name)
    for _ in range(400):
        opt.zero_grad()
        loss_fn(fit(learned[:, None], table), table).mean().backward()
        opt.step()
    got = fit.extra_metadata()["nu" if name == "davidson" else "eta"]
    assert got == pytest.approx(true, rel=0.1)
    centred = (learned - learned.mean()).detach()
    assert centred.tolist() == pytest.approx((scores - scores.mean()).tolist(), abs=0.12)


# ----------------------------------------------------------------------------- end to end


def _ab_rows(n=24, seed=0):
    """Good answers beat refusals; two refusals tie; a tie row for every third prompt."""
    rng, rows = random.Random(seed), []
    for k in range(n):
        good, bad = f"Do step {k}, then check the result carefully.", "I'm sorry, I can't help."
        if k % 3 == 0:
            rows.append({"prompt": f"Task {k}?", "response_a": bad, "response_b": f"No. Sorry {k}.", "winner": "tie"})
        elif rng.random() < 0.5:
            rows.append({"prompt": f"Task {k}?", "response_a": good, "response_b": bad, "winner": "a"})
        else:
            rows.append({"prompt": f"Task {k}?", "response_a": bad, "response_b": good, "winner": "model_b"})
    return rows


def test_a_davidson_text_model_learns_ties_saves_nu_and_compares(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows())
    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=3, loss="davidson")
    result = train(cfg)
    for split in ("train", "eval"):
        m = result.metrics[split]
        assert {"three_way_accuracy", "three_way_log_loss", "tie_rate"} <= set(m)
    train_ties = result.metrics["train"]["tie_rate"]
    assert 0.2 < train_ties < 0.5 and result.metrics["data"]["train_pairs"] == pytest.approx(
        result.metrics["train"]["pairs"] / (1 - train_ties))  # the pairwise metrics count decided pairs only
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    nu = rm.metadata["outcome"]["nu"]
    assert rm.model.outcome.name == "davidson" and nu > 0
    p = rm.compare("Task 1?", "Do step 1, then check the result carefully.", "I'm sorry, I can't help.")
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-6) and p["tie"] > 0
    ra, rb = rm.score_batch(["Task 1?"] * 2, ["Do step 1, then check the result carefully.", "I'm sorry, I can't help."])
    d = ra - rb
    z = math.exp(d / 2) + math.exp(-d / 2) + nu
    assert p["a"] == pytest.approx(math.exp(d / 2) / z, rel=1e-4) and p["tie"] == pytest.approx(nu / z, rel=1e-4)


def test_the_cross_encoder_is_position_invariant_and_round_trips(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows())
    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=2, loss="three_class")
    cfg = type(cfg)(**{**cfg.__dict__, "model": type(cfg.model)(**{**cfg.model.__dict__, "kind": "cross_encoder"})})
    result = train(cfg)
    assert {"three_way_accuracy", "three_way_log_loss"} <= set(result.metrics["eval"])
    assert AutoConfig.from_pretrained(result.model_dir).hidden_dropout_prob == 0  # model.dropout's default applies
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    a, b = "Do step 5, then check the result carefully.", "I'm sorry, I can't help."
    ab, ba = rm.compare("Task 5?", a, b), rm.compare("Task 5?", b, a)
    assert sum(ab.values()) == pytest.approx(1.0, abs=1e-6)
    assert (ab["a"], ab["b"], ab["tie"]) == pytest.approx((ba["b"], ba["a"], ba["tie"]), abs=1e-5)
    with pytest.raises(TypeError, match="pairwise model reads two text responses"):
        rm.score("Task 5?", a)


def test_kind_and_loss_must_agree(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows(6))
    with pytest.raises(ValueError, match="train.loss=three_class needs a pairwise model kind"):
        train(tiny_config(tiny_bert, data, tmp_path / "a", loss="three_class"))
    cfg = tiny_config(tiny_bert, data, tmp_path / "b", loss="davidson")
    cfg = type(cfg)(**{**cfg.__dict__, "model": type(cfg.model)(**{**cfg.model.__dict__, "kind": "cross_encoder"})})
    with pytest.raises(ValueError, match="model.kind=cross_encoder predicts outcomes with three_class"):
        train(cfg)


@pytest.mark.parametrize("kind,loss", [("text", "davidson"), ("cross_encoder", "three_class")])
def test_eval_reports_three_way_metrics_for_tie_aware_and_pairwise_models(tiny_bert, tmp_path, kind, loss):
    from rewardlab.evaluation.run import evaluate

    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows())
    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=1, loss=loss)
    cfg = type(cfg)(**{**cfg.__dict__, "model": type(cfg.model)(**{**cfg.model.__dict__, "kind": kind})})
    result = evaluate(str(train(cfg).model_dir), str(data), tmp_path / "eval", n_boot=10, progress=False)
    o = result.metrics["outcomes"]
    assert o["pairs"] == 24 and o["per_class"]["tie"]["support"] == 8 and len(o["confusion"]) == 3
    assert o["position_consistency"] == 1.0 if kind == "text" else 0.0 <= o["position_consistency"] <= 1.0
    assert result.metrics["pairs"] == 16  # accuracy reads the decided pairs only
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0
    assert "A / B / tie: accuracy" in result.summary()


def test_cross_validation_trains_one_model_per_stratified_fold_and_eval_scores_each_on_its_fold(
        tiny_bert, tmp_path, capsys):
    import json

    from rewardlab.cli import main

    rows = [dict(r, group=f"g{k // 2}") for k, r in enumerate(_ab_rows(24))]
    data = write_jsonl(tmp_path / "ab.jsonl", rows)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "cv"), "--set", f"model.backbone={tiny_bert}",
                 "--set", "data.folds=3", "--set", "data.stratify=true", "--set", "data.split_by=group",
                 "--set", "train.loss=davidson", "--set", "train.epochs=1", "--set", "data.max_length=64",
                 "--set", "train.progress=false", "--set", "train.log_with=[]"])
    assert code == 0 and "over 3 folds" in capsys.readouterr().out
    cv = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert len(cv["per_fold"]) == 3 and {"three_way_log_loss", "accuracy"} <= set(cv["mean"])
    assert sum(f["pairs"] / (1 - f["tie_rate"]) for f in cv["per_fold"]) == pytest.approx(24)  # each pair held out once
    assert all(0.2 < f["tie_rate"] < 0.45 for f in cv["per_fold"])  # stratified: a third of each fold are ties

    # eval on the cross-validated data: each fold's model on its own held-out fold, as training evaluated it
    assert main(["eval", "--model", str(tmp_path / "cv"), "--data", str(data), "--no-plots"]) == 0
    assert "3 folds, held out: own fold" in capsys.readouterr().out
    folds = json.loads((tmp_path / "cv" / "eval" / "ab" / "cv_metrics.json").read_text())  # eval/<data name>/
    assert [f["pairs"] for f in folds["per_fold"]] == [f["pairs"] for f in cv["per_fold"]]
    for ours, trained in zip(folds["per_fold"], cv["per_fold"]):
        assert ours["three_way_log_loss"] == pytest.approx(trained["three_way_log_loss"], abs=1e-4)
        assert ours["accuracy"] == pytest.approx(trained["accuracy"])
    assert folds["std"]["accuracy"] == pytest.approx(cv["std"]["accuracy"])
    # other data: every fold's model on all of it
    other = write_jsonl(tmp_path / "other.jsonl", _ab_rows(9))
    assert main(["eval", "--model", str(tmp_path / "cv"), "--data", str(other), "--out", str(tmp_path / "o"),
                 "--no-plots"]) == 0
    folds = json.loads((tmp_path / "o" / "cv_metrics.json").read_text())
    assert folds["held_out"].startswith("all data") and all(f["pairs"] == 6 for f in folds["per_fold"])


def test_the_tie_parameter_has_its_own_learning_rate_and_no_weight_decay(tiny_bert, tmp_path):
    from rewardlab.models.base import get_kind
    from rewardlab.models.outcomes import Davidson
    from rewardlab.train.optim import build_optimizer

    data = write_jsonl(tmp_path / "ab.jsonl", _ab_rows(6))
    cfg = tiny_config(tiny_bert, data, tmp_path / "o", loss="davidson", lr_outcome=0.1, weight_decay=0.5)
    model = get_kind("text").build(cfg, [], get_kind("text").processor(cfg))
    model.set_outcome(Davidson())
    groups = {g["name"]: g for g in build_optimizer(model.parameter_groups(), cfg.train).param_groups
              if g["name"] == "outcome"}
    assert groups["outcome"]["lr"] == 0.1 and groups["outcome"]["weight_decay"] == 0.0
    assert groups["outcome"]["params"] == [model.outcome.log_nu]
