"""Process reward models: per-step losses, the step encoding, training with `rewardlab train`, the saved folder
read by plain transformers, and scoring (score_steps, score's aggregates)."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_jsonl
from rewardlab.losses import STEP_BCE, STEP_BCE_LAST, STEP_BCE_PREFIX, build_pair_loss, class_weights
from rewardlab.models.prm import PRM_KIND, aggregate_steps
from rewardlab.scoring_steps import aggregate_probabilities

WORDS = ["add", "carry", "sum", "check", "note", "copy", "split", "join"]


def solutions(n: int, seed: int, prefix: str = "task") -> list[dict]:
    """Solutions of 2-4 steps; in every other one a step ending in "wrong" is wrong, all others right."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(2, 4)
        steps, labels = [f"{rng.choice(WORDS)} {rng.choice(WORDS)}" for _ in range(k)], [True] * k
        if i % 2:
            j = rng.randrange(k)
            steps[j], labels[j] = f"{WORDS[i // 2 % len(WORDS)]} wrong", False  # each word meets "wrong"
        rows.append({"prompt": f"{prefix} {i}", "completions": steps, "labels": labels})
    return rows


# ----------------------------------------------------------------------------- losses (closed form)


def test_step_losses_read_all_steps_the_prefix_or_the_last():
    logits = torch.tensor([0.0, 2.0, -1.0, 1.0, 0.5])
    labels = torch.tensor([True, False, True, True, False])
    solution = torch.tensor([0, 0, 0, 1, 1])
    bce = lambda z, y: float(-np.log(1 / (1 + np.exp(-z))) if y else -np.log(1 - 1 / (1 + np.exp(-z))))
    terms = [bce(z, y) for z, y in zip(logits.tolist(), labels.tolist())]
    assert STEP_BCE(logits, labels, solution).item() == pytest.approx(np.mean(terms), rel=1e-5)
    assert STEP_BCE_PREFIX(logits, labels, solution).item() == pytest.approx(np.mean(terms[:2] + terms[3:]), rel=1e-5)
    assert STEP_BCE_LAST(logits, labels, solution).item() == pytest.approx((terms[2] + terms[4]) / 2, rel=1e-5)
    # class weights: 3 right, 2 wrong -> auto gives wrong 5/4 and right 5/6; a number weighs the wrong steps
    w_wrong, w_right = class_weights(labels, "auto")
    assert (w_wrong, w_right) == pytest.approx((1.25, 5 / 6))
    weights = np.where(labels.numpy(), w_right, w_wrong)
    assert STEP_BCE(logits, labels, solution, (w_wrong, w_right)).item() == pytest.approx(
        np.dot(weights, terms) / weights.sum(), rel=1e-5)
    assert class_weights(labels, "3") == (3.0, 1.0) and class_weights(labels, "none") == (1.0, 1.0)


def test_pairwise_and_step_losses_refuse_each_other(tmp_path):
    from rewardlab.train.steps import step_config, trains_steps

    with pytest.raises(ValueError, match="per-step loss for process reward models"):
        build_pair_loss("step_bce")
    steps = write_jsonl(tmp_path / "steps.jsonl", solutions(4, 0))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="pairwise loss; a process reward model trains with a per-step loss"):
        step_config(tiny_config("x", steps, tmp_path, loss="focal"))
    cfg = tiny_config("x", steps, tmp_path)
    with pytest.raises(ValueError, match=r"model.kind=prm\); model.kind=cross_encoder"):
        step_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="cross_encoder")))
    with pytest.raises(ValueError, match="data.folds is not supported for process reward models"):
        step_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, folds=2)))
    with pytest.raises(ValueError, match="train.loss=step_bce is a per-step loss"):
        trains_steps(tiny_config("x", pairs, tmp_path, loss="step_bce"))
    assert trains_steps(tiny_config("x", steps, tmp_path)) and not trains_steps(tiny_config("x", pairs, tmp_path))
    cfg = step_config(tiny_config("x", steps, tmp_path))  # stepwise data: the prm kind and step_bce by themselves
    assert (cfg.model.kind, cfg.train.loss) == ("prm", "step_bce")


def test_aggregates():
    probs, mask = torch.tensor([[0.2, 0.9, 0.5, 0.8], [0.3, 0.6, 0.0, 0.0]]), torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    expected = {"min": [0.5, 0.3], "product": [0.36, 0.18], "mean": [2.2 / 3, 0.45], "last": [0.8, 0.6]}
    for how, values in expected.items():
        assert aggregate_steps(probs, mask.bool(), how).tolist() == pytest.approx(values)
        assert aggregate_probabilities([0.9, 0.5, float("nan"), 0.8], how) == pytest.approx(
            values[0] if how != "last" else 0.8)


# ----------------------------------------------------------------------------- encoding


def test_encoding_reads_each_step_at_its_separator_and_keeps_the_steps_that_fit(tiny_llama, tmp_path):
    cfg = tiny_config(tiny_llama, tmp_path / "x.jsonl", tmp_path)
    processor = PRM_KIND.processor(cfg)
    assert processor.separator == "\n" and processor.step_tag_id == processor.tokenizer.encode("\n")[-1]
    (ids, ends), = processor.encode_solutions(["2+2?"], [["2+2=4", "So 4."]])[0]
    assert [ids[e] for e in ends] == [processor.step_tag_id] * 2 and ends[-1] == len(ids) - 1
    assert processor.tokenizer.decode(ids) == "2+2?2+2=4\nSo 4.\n"  # TRL's layout: prompt, then each step + "\n"
    batch = processor.collate(processor.encode_solutions(["q", "a longer question"], [["x"], ["y", "z"]])[0])
    assert batch["step_mask"].sum(1).tolist() == [1, 2] and batch["input_ids"].shape == batch["step_mask"].shape
    # data.max_length=64: a solution of many steps keeps those that fit, whole, and says how many
    items, kept = processor.encode_solutions(["q"], [[f"step number {i} of many" for i in range(40)]])
    assert 1 <= kept[0] < 40 and len(items[0][0]) <= 64 and len(items[0][1]) == kept[0]
    assert processor.split_steps("one\n\n two \nthree") == ["one", "two", "three"]


def test_encoder_backbone_uses_its_separator_token_and_round_trips(tiny_bert, tmp_path):
    from transformers import AutoModelForTokenClassification

    from rewardlab.models.base import save_model
    from rewardlab.scoring import RewardModel

    cfg = tiny_config(tiny_bert, tmp_path / "x.jsonl", tmp_path)
    processor = PRM_KIND.processor(cfg)
    assert processor.separator == "[SEP]"  # BERT's tokenizer drops "\n": auto picks its separator token
    save_model(PRM_KIND.build(cfg, [], processor), processor, tmp_path / "m", {}, kind="prm")
    rm = RewardModel.from_pretrained(str(tmp_path / "m"), device="cpu")
    probs = rm.score_steps("What?", ["First.", "Second."])
    assert len(probs) == 2 and rm.score("What?", "First.\nSecond.") == pytest.approx(min(probs), abs=1e-6)
    hf = AutoModelForTokenClassification.from_pretrained(tmp_path / "m")
    assert hf.config.num_labels == 2 and hf.config.step_separator == "[SEP]" and hf.config.id2label[1] == "correct"


def test_lora_trains_adapters_and_the_head(tiny_llama, tmp_path):
    cfg = tiny_config(tiny_llama, tmp_path / "x.jsonl", tmp_path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="prm", lora=True))
    model = PRM_KIND.build(cfg, [], PRM_KIND.processor(cfg))
    groups = model.parameter_groups()
    assert any("lora_" in n for n, _ in groups["backbone"]) and any("score" in n for n, _ in groups["head"])
    assert not any("lora_" not in n for n, _ in groups["backbone"])  # the backbone itself is frozen


# ----------------------------------------------------------------------------- training and scoring


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """A tiny Llama PRM trained by `rewardlab train`'s library call on stepwise data (60 steps, about a second)."""
    from rewardlab.train.experiment import run_experiment

    d = tmp_path_factory.mktemp("prm")
    data = write_jsonl(d / "steps.jsonl", solutions(160, 0))
    cfg = tiny_config(tiny_llama, data, d / "run", max_steps=60, lr_backbone=5e-3, lr_head=5e-3, batch_size=8,
                      step_class_weight="auto", eval_every=20)
    return run_experiment(cfg)


def test_training_writes_a_prm_with_held_out_step_metrics(trained):
    metrics = json.loads((trained.model_dir.parent / "metrics.json").read_text())
    assert metrics["kind"] == "prm" and metrics["loss"] == "step_bce" and metrics["steps"] == 60
    assert metrics["eval"]["wrong_steps"] > 0 and metrics["eval"]["step_accuracy"] >= 0.95
    assert metrics["data"]["train_encoding"]["steps_left_out"] == 0
    assert json.loads((trained.model_dir / "config.json").read_text())["rewardlab"]["kind"] == "prm"


def test_the_prm_finds_the_wrong_step_on_held_out_solutions(trained):
    from rewardlab.scoring import RewardModel

    rm = RewardModel.from_pretrained(str(trained.model_dir), device="cpu")
    held_out = [s for s in solutions(40, 7, prefix="new problem") if not all(s["labels"])]
    probs = rm.score_steps_batch([s["prompt"] for s in held_out], [s["completions"] for s in held_out])
    for s, p in zip(held_out, probs):
        wrong = s["labels"].index(False)
        others = [q for k, q in enumerate(p) if k != wrong]
        assert p[wrong] < 0.3 and min(others) > p[wrong] + 0.4, (s, p)
    s, p = held_out[0], probs[0]
    text = "\n".join(s["completions"])
    assert rm.score(s["prompt"], text) == pytest.approx(min(p), abs=1e-5)  # min by default
    assert rm.score(s["prompt"], text, aggregate="product") == pytest.approx(float(np.prod(p)), abs=1e-5)
    assert rm.score_steps(s["prompt"], s["completions"]) == pytest.approx(p, abs=1e-6)
    right = "\n".join(w for w in s["completions"] if not w.endswith("wrong"))
    assert rm.best_of_n(s["prompt"], [text, right])[0] == 1
    with pytest.raises(ValueError, match="aggregate='median'"):
        rm.score(s["prompt"], text, aggregate="median")


def test_plain_transformers_reads_the_folder_and_agrees_with_score_steps(trained):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from rewardlab.scoring import RewardModel

    folder = trained.model_dir
    hf = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert hf.config.step_separator == "\n" and hf.config.num_labels == 2
    prompt, steps = "new problem 3", ["add sum", "copy wrong", "note join"]
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for step in steps:  # as TRL's PRMTrainer lays a solution out
        ids += tokenizer(step, add_special_tokens=False)["input_ids"] + tokenizer.encode("\n", add_special_tokens=False)
    with torch.no_grad():
        probs = hf(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
    at_tags = probs[torch.tensor(ids) == hf.config.step_tag_id].tolist()
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    assert rm.score_steps(prompt, steps) == pytest.approx(at_tags, abs=1e-5)


def test_eval_on_stepwise_data_reports_steps_and_first_errors(trained, tmp_path, capsys):
    from rewardlab.cli import main

    data = write_jsonl(tmp_path / "held_out.jsonl", solutions(30, 11, prefix="unseen"))
    assert main(["eval", "--model", str(trained.model_dir), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["counts"]["solutions"] == 30 and metrics["counts"]["solutions_with_error"] == 15
    assert metrics["steps"]["step_accuracy"]["value"] >= 0.9 and metrics["first_error"]["f1"]["value"] >= 0.8
    assert "step accuracy: " in capsys.readouterr().out
    # preference pairs: a PRM judges each whole response by its steps' aggregate (min), as best-of-n does
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "add sum\ncopy join",
                                                    "rejected": "add sum\ncopy wrong"}] * 2)
    assert main(["eval", "--model", str(trained.model_dir), "--data", str(pairs), "--out", str(tmp_path / "ev2"),
                 "--no-plots"]) == 0
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["overall"]["accuracy"]["value"] == 1.0


def test_a_token_classifier_rewardlab_did_not_write_loads_as_a_prm(tiny_llama, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, LlamaForTokenClassification

    from rewardlab.scoring import RewardModel

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_llama, num_labels=2)
    hf = LlamaForTokenClassification(config).eval()  # as TRL's PRMTrainer leaves one: no rewardlab block
    hf.save_pretrained(tmp_path / "trl-prm")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.save_pretrained(tmp_path / "trl-prm")
    rm = RewardModel.from_pretrained(str(tmp_path / "trl-prm"), device="cpu")
    assert rm.kind.name == "prm"
    ids = tokenizer("q", add_special_tokens=False)["input_ids"]
    for step in ("add sum", "copy join"):
        ids += tokenizer(step + "\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = hf(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    assert rm.score_steps("q", ["add sum", "copy join"]) == pytest.approx(
        probs[torch.tensor(ids) == newline].tolist(), abs=1e-5)


def test_the_server_returns_each_steps_reward_beside_the_aggregate(trained):
    from conftest import post, serving
    from rewardlab.scoring import RewardModel
    from rewardlab.serve.app import create_app

    rm = RewardModel.from_pretrained(str(trained.model_dir), device="cpu")
    steps = ["add sum", "copy wrong", "note join"]
    with serving(create_app({"prm": rm})) as (base, _):
        status, reply, _ = post(f"{base}/v1/score", {"items": [{"prompt": "new problem 5",
                                                                 "response": "\n".join(steps)}]})
    assert status == 200
    assert reply["step_rewards"][0] == pytest.approx(rm.score_steps("new problem 5", steps), abs=1e-5)
    assert reply["scores"][0] == pytest.approx(min(reply["step_rewards"][0]), abs=1e-5)


def test_trls_reward_function_gets_the_aggregate(trained):
    from rewardlab.reward_function import RewardFunction

    reward = RewardFunction(str(trained.model_dir), device="cpu")
    solution = ["add sum", "copy wrong", "note join"]
    rewards = reward(["new problem 5"] * 2, ["\n".join(solution), "add sum\nnote join"])
    assert rewards[1] > rewards[0]  # the solution with the wrong step gets the lower reward
    assert rewards[0] == pytest.approx(min(reward.reward_model.score_steps("new problem 5", solution)), abs=1e-5)


def test_packed_solutions_score_as_padded_ones_and_train(tiny_llama, tmp_path):
    """model.packing: one row, no padding, sequence boundaries from the position ids; each step's probability
    and each solution's aggregate are those of the padded batch."""
    from rewardlab.train.experiment import run_experiment

    cfg = tiny_config(tiny_llama, tmp_path / "x.jsonl", tmp_path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="prm", packing=True))
    packed = PRM_KIND.processor(cfg)
    padded = PRM_KIND.processor(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, packing=False)))
    model = PRM_KIND.build(cfg, [], packed).eval()
    items, _ = packed.encode_solutions(["q", "a longer question here", "mid"],
                                       [["add sum"], ["copy wrong", "note join", "split"], ["carry", "check"]])
    with torch.no_grad():
        a, b = packed.collate(items), padded.collate(items)
        assert a["input_ids"].shape[0] == 1 and a["step_counts"].tolist() == [1, 3, 2]
        assert model(**a, steps=True) == pytest.approx(model(**b, steps=True), abs=1e-5)
        assert model(**a).flatten().tolist() == pytest.approx(model(**b).flatten().tolist(), abs=1e-5)
    data = write_jsonl(tmp_path / "steps.jsonl", solutions(24, 1))
    run = tiny_config(tiny_llama, data, tmp_path / "run", max_steps=3)
    result = run_experiment(dataclasses.replace(run, model=dataclasses.replace(run.model, packing=True)))
    assert json.loads((result.model_dir / "config.json").read_text())["rewardlab"]["kind"] == "prm"
