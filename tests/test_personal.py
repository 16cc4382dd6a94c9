"""Personalised reward models: two labelers with opposite tastes, population fallback, save / load, errors."""

import dataclasses

import pytest

from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import tiny_config, write_jsonl

TOPICS = ["eggs", "bread", "tea", "rice", "soup", "pasta", "coffee", "salad", "beans", "pizza"]


def _answers(k: int) -> tuple[str, str]:
    topic = TOPICS[k % len(TOPICS)]
    concise = f"Cook the {topic}."
    detailed = (f"First wash the {topic}, then heat the pan slowly, add salt and water, stir it for a while, "
                f"taste it, wait ten minutes and serve the {topic} warm with some herbs on top.")
    return concise, detailed


def opposite_tastes(n_prompts: int) -> list[dict]:
    """alice prefers the concise answer, bob the detailed one, on the same prompts."""
    rows = []
    for k in range(n_prompts):
        concise, detailed = _answers(k)
        prompt = f"How do I make dish {k}?"
        rows.append({"prompt": prompt, "chosen": concise, "rejected": detailed, "labeler": "alice"})
        rows.append({"prompt": prompt, "chosen": detailed, "rejected": concise, "labeler": "bob"})
    return rows


def accuracy_by_labeler(rm: RewardModel, rows: list[dict], labelers=("alice", "bob")) -> dict[str, float]:
    out = {}
    for who in labelers:
        mine = [r for r in rows if r["labeler"] == who]
        chosen = rm.score_batch([r["prompt"] for r in mine], [r["chosen"] for r in mine], labeler=who)
        rejected = rm.score_batch([r["prompt"] for r in mine], [r["rejected"] for r in mine], labeler=who)
        out[who] = sum(c > r for c, r in zip(chosen, rejected)) / len(mine)
    return out


@pytest.fixture(scope="module")
def taste_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tastes")
    return write_jsonl(root / "train.jsonl", opposite_tastes(40)), opposite_tastes(60)[80:]  # 20 unseen prompts


def _train(backbone, data, out, mode, epochs=6, **model):
    cfg = tiny_config(backbone, data, out, epochs=epochs, lr_head=3e-3)
    # The tiny random BERT at lr 1e-3 needs its dropout: without it lowrank's features collapse (one labeler at 0.0)
    model = {"dropout": -1.0, **model}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_by="prompt"),
                              model=dataclasses.replace(cfg.model, personalization=mode, **model))
    return train(cfg)


@pytest.fixture(scope="module")
def trained_mode(tiny_bert, taste_data, tmp_path_factory):
    """A model per personalization mode trained once on the opposite tastes, shared by the tests below."""
    cache = {}

    def get(mode: str):
        if mode not in cache:
            cache[mode] = _train(tiny_bert, taste_data[0], tmp_path_factory.mktemp(mode), mode)
        return cache[mode]

    return get


@pytest.mark.parametrize("mode", ["embedding", "lowrank", "tokens"])
def test_opposite_tastes_population_is_at_chance_personal_is_right_for_both(trained_mode, taste_data, mode):
    held_out = taste_data[1]
    result = trained_mode(mode)
    assert result.metrics["data"]["labelers"]["personal"] == 2
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    assert rm.labelers == ["alice", "bob"] and rm.labeler_source("alice") == "personal"
    personal = accuracy_by_labeler(rm, held_out)
    assert min(personal.values()) >= 0.9, personal
    # the population reward cannot serve both: it is right for one labeler exactly when wrong for the other
    rows = held_out
    population = [rm.score("p", r["chosen"]) > rm.score("p", r["rejected"]) for r in rows]
    assert sum(population) / len(population) == pytest.approx(0.5, abs=0.01)


def test_population_model_sits_at_chance_for_each(trained_mode, taste_data):
    held_out = taste_data[1]
    result = trained_mode("none")
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    acc = accuracy_by_labeler(rm, held_out)  # labelers are ignored by a population model
    assert acc["alice"] + acc["bob"] == pytest.approx(1.0, abs=1e-9)  # each pair is one labeler's win, the other's loss
    assert rm.labeler_source("alice") == "population"


def test_unknown_labelers_fall_back_to_the_population_or_raise(trained_mode):
    rm = RewardModel.from_pretrained(str(trained_mode("embedding").model_dir), device="cpu")
    a = "Cook the eggs."
    assert rm.score("q", a, labeler="carol") == pytest.approx(rm.score("q", a), abs=1e-6)
    assert rm.labeler_source("carol") == "population"
    with pytest.raises(ValueError, match="unknown labeler 'carol'; the model knows 2 labelers \\(alice, bob\\)"):
        rm.score("q", a, labeler="carol", unknown_labeler="error")
    with pytest.raises(ValueError, match="labeler must be a non-empty string id"):
        rm.score("q", a, labeler="  ")
    p = rm.compare("q", a, "Cook it for a long time.", labeler="bob")
    assert sum(p.values()) == pytest.approx(1.0)


def test_labelers_with_too_few_pairs_fold_into_the_population(tiny_bert, tmp_path):
    rows = opposite_tastes(12) + [{"prompt": "Rare?", "chosen": "Yes.", "rejected": "No.", "labeler": "rare"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = _train(tiny_bert, data, tmp_path / "r", "lowrank", epochs=1, min_labeler_pairs=3)
    report = result.metrics["data"]["labelers"]
    assert report["personal"] == 2 and report["population_only"] == 1
    no_labelers = write_jsonl(tmp_path / "n.jsonl", [{k: v for k, v in r.items() if k != "labeler"} for r in rows])
    with pytest.raises(ValueError, match="no labeler has model.min_labeler_pairs=5 .*no labeler column"):
        _train(tiny_bert, no_labelers, tmp_path / "n", "embedding", epochs=1)


# ----------------------------------------------------------------------------- adapt: few-shot onboarding


@pytest.mark.parametrize("mode", ["embedding", "lowrank", "tokens"])
def test_adapt_learns_a_new_labeler_and_leaves_everyone_else_bit_for_bit(trained_mode, taste_data, tmp_path, mode):
    import torch
    from rewardlab.cli import main

    held_out = taste_data[1]
    trained = trained_mode(mode).model_dir
    # carol likes detail like bob, but only 10 judgements of hers are seen
    carol = [dict(r, labeler="carol") for r in opposite_tastes(70)[120:] if r["labeler"] == "bob"]
    carol_file = write_jsonl(tmp_path / "carol.jsonl", carol)
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(trained), "--data", str(carol_file), "--labeler", "carol",
                 "--out", str(out)]) == 0
    before, after = (RewardModel.from_pretrained(str(p), device="cpu") for p in (trained, out))
    assert after.labelers == ["alice", "bob", "carol"] and after.labeler_source("carol") == "personal"
    prompts = [r["prompt"] for r in held_out]
    texts = [r["chosen"] for r in held_out]
    for who in ("alice", "bob", None):
        old = torch.tensor(before.score_batch(prompts, texts, labeler=who))
        new = torch.tensor(after.score_batch(prompts, texts, labeler=who))
        assert torch.equal(old, new), who  # bit for bit
    # carol's new reward agrees with her taste on prompts she never judged
    bob_rows = [r for r in held_out if r["labeler"] == "bob"]
    chosen = after.score_batch([r["prompt"] for r in bob_rows], [r["chosen"] for r in bob_rows], labeler="carol")
    rejected = after.score_batch([r["prompt"] for r in bob_rows], [r["rejected"] for r in bob_rows], labeler="carol")
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(bob_rows) >= 0.9


def test_adapt_refuses_known_labelers_and_population_models(trained_mode, taste_data):
    from rewardlab.train.adapt import adapt

    data = taste_data[0]
    personal = trained_mode("embedding").model_dir
    with pytest.raises(ValueError, match="labeler 'alice' is already in"):
        adapt(str(personal), str(data), "alice")
    with pytest.raises(ValueError, match="rows judged by 'alice'; adapt reads one labeler's judgements \\('dave'\\)"):
        adapt(str(personal), str(data), "dave")
    population = trained_mode("none").model_dir
    with pytest.raises(ValueError, match="is not a personalised model"):
        adapt(str(population), str(data), "dave")


# ----------------------------------------------------------------------------- the server


def test_the_server_scores_and_compares_per_labeler(trained_mode, taste_data):
    from rewardlab.serve.app import create_app
    from rewardlab.serve.config import ServeConfig
    from test_serve import post, serving

    held_out = taste_data[1]
    rm = RewardModel.from_pretrained(str(trained_mode("lowrank").model_dir), device="cpu")
    row = held_out[0]
    with serving(create_app({"default": rm}, ServeConfig())) as (url, _):
        items = [{"prompt": row["prompt"], "response": row["chosen"], "labeler": u} for u in ("alice", "bob", "carol")]
        code, reply, _ = post(f"{url}/v1/score", {"items": items})
        assert code == 200 and reply["reward_source"] == ["personal", "personal", "population"]
        expected = [rm.score(row["prompt"], row["chosen"], labeler=u) for u in ("alice", "bob", "carol")]
        assert reply["scores"] == pytest.approx(expected, abs=1e-5)
        code, reply, _ = post(f"{url}/v1/score", {"items": items, "unknown_labeler": "error"})
        assert code == 422 and "items[2].labeler: unknown labeler 'carol'" in reply["detail"]
        pair = {"prompt": row["prompt"], "response_a": row["chosen"], "response_b": row["rejected"]}
        code, reply, _ = post(f"{url}/v1/compare", {"items": [dict(pair, labeler="alice"), dict(pair, labeler="bob")]})
        assert code == 200 and reply["outcome_model"] == "bradley_terry"
        alice, bob = reply["probabilities"]
        assert (alice["a"] > 0.5) != (bob["a"] > 0.5)  # opposite tastes, opposite verdicts
        assert alice["a"] == pytest.approx(rm.compare(row["prompt"], row["chosen"], row["rejected"],
                                                      labeler="alice")["a"], abs=1e-5)
        code, reply, _ = post(f"{url}/v1/compare", {"items": [dict(pair, labeler="")]})
        assert code == 422 and "labeler must be a non-empty string id" in reply["detail"]


def test_eval_compares_each_labelers_reward_with_the_population(trained_mode, taste_data, tmp_path):
    from rewardlab.evaluation.run import evaluate

    held_out = taste_data[1]
    model_dir = trained_mode("lowrank").model_dir
    test = write_jsonl(tmp_path / "test.jsonl", held_out)
    result = evaluate(str(model_dir), str(test), tmp_path / "eval", n_boot=20, progress=False)
    personal = result.metrics["personal"]
    assert set(personal["labelers"]) == {"alice", "bob"}
    for row in personal["labelers"].values():
        assert row["reward"] == "personal" and row["train_pairs"] == 32 and row["pairs"] == 20
        assert row["accuracy"] >= 0.9 and row["gain"] == pytest.approx(row["accuracy"] - row["population_accuracy"])
    assert personal["overall"]["population_accuracy"] == pytest.approx(0.5)
    assert (tmp_path / "eval" / "labeler_gains.png").stat().st_size > 0
    assert "labelers: own reward" in result.summary()


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("shared, mode", [(False, "tokens"), (True, "embedding")])
def test_a_personalised_ensemble_keeps_each_labelers_taste(tiny_bert, taste_data, tmp_path, shared, mode):
    from rewardlab.train.adapt import adapt
    from rewardlab.serve.app import create_app
    from rewardlab.serve.config import ServeConfig
    from rewardlab.train.ensemble import train_ensemble
    from test_serve import post, serving

    cfg = tiny_config(tiny_bert, taste_data[0], tmp_path, epochs=6, lr_head=3e-3, ensemble_size=2,
                      ensemble_bootstrap=shared, ensemble_shared_backbone=shared)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_by="prompt"),
                              model=dataclasses.replace(cfg.model, personalization=mode, dropout=-1.0))
    result = train_ensemble(cfg)
    assert result.metrics["eval"]["accuracy"] >= 0.9  # the held-out prompts, judged by each labeler's reward
    model_dir = result.model_dir
    rm = RewardModel.from_pretrained(str(model_dir), device="cpu")
    assert rm.is_ensemble and rm.labelers == ["alice", "bob"]
    # one labeler table for every member, and each labeler's pairs as in the data (not the member heads' copies)
    assert rm.metadata["personalization"]["train_pairs"] == {"alice": 32, "bob": 32}
    assert min(accuracy_by_labeler(rm, taste_data[1]).values()) >= 0.9
    row, who = taste_data[1][0], ["alice", "bob", "carol"]
    spread = rm.score_uncertainty([row["prompt"]] * 3, [row["chosen"]] * 3, labeler=who)
    assert spread["mean"] == pytest.approx([rm.score(row["prompt"], row["chosen"], labeler=u) for u in who], abs=1e-5)
    assert spread["mean"][2] == pytest.approx(rm.score(row["prompt"], row["chosen"]), abs=1e-6)  # the population
    assert min(spread["std"]) > 0  # the members differ (seeds; for member heads, bootstrap weights too)
    with serving(create_app({"default": rm}, ServeConfig())) as (url, _):
        code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": row["prompt"], "response": row["chosen"],
                                                             "labeler": u} for u in who]})
    assert code == 200 and reply["reward_source"] == ["personal", "personal", "population"]
    assert reply["scores"] == pytest.approx(spread["mean"], abs=1e-5)
    assert reply["uncertainty"]["std"] == pytest.approx(spread["std"], abs=1e-5)
    # a new labeler joins every member (separate: a row each; member heads: one shared row), all else unchanged
    carol = [dict(r, labeler="carol") for r in opposite_tastes(70)[120:] if r["labeler"] == "bob"]
    adapt(str(model_dir), str(write_jsonl(tmp_path / "carol.jsonl", carol)), "carol", tmp_path / "adapted")
    after = RewardModel.from_pretrained(str(tmp_path / "adapted"), device="cpu")
    assert after.is_ensemble and after.labelers == ["alice", "bob", "carol"]
    assert after.metadata["personalization"]["train_pairs"]["carol"] == 10
    prompts, texts = [r["prompt"] for r in taste_data[1]], [r["chosen"] for r in taste_data[1]]
    for u in ("alice", "bob", None):
        assert after.score_uncertainty(prompts, texts, labeler=u) == rm.score_uncertainty(prompts, texts, labeler=u)
    bob_rows = [dict(r, labeler="carol") for r in taste_data[1] if r["labeler"] == "bob"]
    assert accuracy_by_labeler(after, bob_rows, ("carol",))["carol"] >= 0.9
    assert min(after.score_uncertainty(prompts[:3], texts[:3], labeler="carol")["std"]) > 0
