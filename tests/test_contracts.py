"""The model / batch / loss contracts: a new kind is a registry entry, and multi-head text models work end to end."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.config import load_config
from rewardlab.evaluation.run import evaluate
from rewardlab.models.base import AGGREGATE, ModelKind, RewardNet, get_kind, register_kind
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import tiny_config, write_jsonl


# ----------------------------------------------------------------------------- a toy kind, defined only here


class VectorItems:
    """Items are the numbers written in the response text: "0.3,-1.2"."""

    def encode_items(self, prompts, responses):
        return [tuple(float(x) for x in r.split(",")) for r in responses], 0

    def cost(self, item):
        return 1

    def collate(self, items):
        return {"x": torch.tensor(items, dtype=torch.float32)}

    def render_chat(self, messages, add_generation_prompt):
        raise NotImplementedError


class LinearHeads(RewardNet):
    def __init__(self, attributes):
        super().__init__()
        self.heads = (*attributes, AGGREGATE)
        self.linear = nn.Linear(2, len(attributes))

    def forward(self, x):  # (N, 2) -> (N, A + 1)
        r = self.linear(x)
        return torch.cat([r, r.mean(1, keepdim=True)], 1)


def _save(model, processor, folder, metadata):
    save_file(dict(model.state_dict()), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"rewardlab": {**metadata, "attributes": model.heads[:-1]}}))


def _load(path, device, dtype):
    meta = json.loads((path_ := __import__("pathlib").Path(path) / "config.json").read_text())["rewardlab"]
    model = LinearHeads(meta["attributes"])
    model.load_state_dict(load_file(path_.parent / "model.safetensors"))
    return model, VectorItems(), meta


register_kind(ModelKind(name="toy", processor=lambda cfg: VectorItems(),
                        build=lambda cfg, attributes, processor: LinearHeads(attributes), save=_save, load=_load))


def test_a_new_kind_trains_saves_loads_and_evaluates_through_the_unchanged_core(tmp_path):
    rng = random.Random(0)
    rows = []
    for p in range(30):  # head "a" should learn x0, head "b" should learn -x1
        for _ in range(4):
            x0, x1 = rng.uniform(-1, 1), rng.uniform(-1, 1)
            rows.append({"prompt": f"p{p}", "response": f"{x0:.4f},{x1:.4f}", "a": round(5 * x0, 2),
                         "b": round(-5 * x1, 2)})
    data = write_jsonl(tmp_path / "v.jsonl", rows)
    cfg = load_config(None, ["model.kind=toy", f"data.train={data}", "data.attributes=[a, b]",
                             "data.min_rating_diff=0.5", f"train.output_dir={tmp_path / 'run'}", "train.epochs=15",
                             "train.lr_head=0.05", "train.batch_size=4", "train.progress=false", "train.log_with=[]",
                             "train.warmup_ratio=0", "train.balance=attribute"])
    result = train(cfg)
    assert result.metrics["heads"] == ["a", "b", "aggregate"]
    by_head = result.metrics["eval"]["by_head"]
    assert by_head["a"]["accuracy"] > 0.95 and by_head["b"]["accuracy"] > 0.95
    weight = RewardModel.from_pretrained(str(result.model_dir), device="cpu").model.linear.weight
    assert weight[0, 0] > 5 * abs(weight[0, 1]) and -weight[1, 1] > 5 * abs(weight[1, 0])
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    scores = rm.score_attributes("p", "1.0,-1.0")
    assert list(scores) == ["a", "b", "aggregate"] and scores["aggregate"] == pytest.approx(
        (scores["a"] + scores["b"]) / 2, abs=1e-6)
    m = evaluate(str(result.model_dir), str(data), tmp_path / "eval", plots=False, n_boot=20, progress=False,
                 data_cfg=cfg.data).metrics
    assert set(m["attributes"]) == {"a", "b", "(overall)"}
    assert m["attributes"]["a"]["accuracy"]["value"] > 0.95 and "roc_auc" in m["attributes"]["b"]


def test_unknown_kind_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model kind 'nope'; valid kinds: .*text"):
        get_kind("nope")
    with pytest.raises(ValueError, match="model.kind='nope' is not valid"):
        load_config(None, ["model.kind=nope"])


# ----------------------------------------------------------------------------- multi-attribute text models


@pytest.fixture
def rated_text(tmp_path):
    rows = []
    for i in range(16):
        prompt = f"How do I do task {i}?"
        rows += [
            {"prompt": prompt, "response": f"Do step one, then step {i}. Please check it.", "helpfulness": 5,
             "politeness": 5},
            {"prompt": prompt, "response": f"Do step one, then step {i}.", "helpfulness": 5, "politeness": 1},
            {"prompt": prompt, "response": "Please, I am sorry, I cannot.", "helpfulness": 1, "politeness": 5},
            {"prompt": prompt, "response": "No.", "helpfulness": 1, "politeness": 1},
        ]
    return write_jsonl(tmp_path / "rated.jsonl", rows)


def test_multi_attribute_text_model_checkpoint_is_plain_transformers(tiny_bert, rated_text, tmp_path):
    cfg = tiny_config(tiny_bert, rated_text, tmp_path / "run", max_steps=6, eval_every=3)
    result = train(cfg)
    assert result.metrics["heads"] == ["helpfulness", "politeness", "aggregate"]
    assert set(result.metrics["eval"]["by_head"]) == {"helpfulness", "politeness", "aggregate"}
    folder = result.model_dir
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.num_labels == 2 and hf.config.id2label == {0: "helpfulness", 1: "politeness"}
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = hf(**tok(["How do I do task 3?\nNo."], return_tensors="pt")).logits[0].tolist()
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    weights = rm.metadata["aggregate_weights"]
    assert weights == pytest.approx([0.5, 0.5])
    scores = rm.score_attributes("How do I do task 3?", "No.")
    assert [scores["helpfulness"], scores["politeness"]] == pytest.approx(logits, abs=1e-5)
    assert scores["aggregate"] == pytest.approx(weights[0] * logits[0] + weights[1] * logits[1], abs=1e-5)
    assert rm.score("How do I do task 3?", "No.") == pytest.approx(scores["aggregate"])
    z = rm.score_heads(["q"], ["a"], normalize="zscore")
    assert z.shape == (1, 3)


def test_learned_aggregate_weights_train_as_head_parameters(tiny_bert, rated_text, tmp_path):
    cfg = tiny_config(tiny_bert, rated_text, tmp_path / "run", max_steps=4)
    cfg = load_config(None, [f"model.backbone={tiny_bert}", f"data.train={rated_text}",
                             f"train.output_dir={tmp_path / 'learned'}", "model.aggregate=learned",
                             "data.max_length=64", "train.max_steps=4", "train.batch_size=4", "train.lr_head=0.1",
                             "train.progress=false", "train.log_with=[]", "train.warmup_ratio=0"])
    kind = get_kind("text")
    model = kind.build(cfg, ["helpfulness", "politeness"], kind.processor(cfg))
    assert any(n.startswith("aggregator.") for n, _ in model.parameter_groups()["head"])
    weights = RewardModel.from_pretrained(str(train(cfg).model_dir), device="cpu").metadata["aggregate_weights"]
    assert sum(weights) == pytest.approx(1.0) and weights != pytest.approx([0.5, 0.5], abs=1e-4)


def test_weighted_aggregate_must_name_attributes(tiny_bert, rated_text, tmp_path):
    cfg = load_config(None, [f"model.backbone={tiny_bert}", f"data.train={rated_text}", "model.aggregate=weighted",
                             "model.aggregate_weights={helpfulness: 1, style: 2}"])
    kind = get_kind("text")
    with pytest.raises(ValueError, match="aggregate_weights names 'style', which is not an attribute"):
        kind.build(cfg, ["helpfulness", "politeness"], kind.processor(cfg))
