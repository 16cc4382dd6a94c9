import json
import shutil

import numpy as np
import pytest

from rewardlab.config import DataConfig
from rewardlab.evaluation.calibration import fit_temperature, store_temperature
from rewardlab.evaluation.compare import compare
from rewardlab.evaluation.invariance import run_invariance_checks
from rewardlab.evaluation.run import _reliability_curves, calibrate, evaluate
from rewardlab.metrics.pairwise import pairwise_accuracy
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import chromium_browser, tiny_config, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tiny_bert, tmp_path_factory):
    d = tmp_path_factory.mktemp("evalmodel")
    rows = [{"prompt": f"q{i}", "chosen": f"a careful helpful answer {i}", "rejected": "no."} for i in range(16)]
    return str(train(tiny_config(tiny_bert, write_jsonl(d / "p.jsonl", rows), d / "run", max_steps=4,
                                 eval_every=2)).model_dir)


@pytest.fixture
def eval_file(tmp_path):
    rows = []
    for i in range(12):
        rows.append({"prompt": f"<script>alert({i})</script> question {i}", "chosen": f"a long helpful answer {i}",
                     "rejected": "no.", "labeler": f"u{i % 3}", "subset": "chat" if i < 8 else "safety"})
        rows.append({"prompt": f"<script>alert({i})</script> q{i}", "chosen": "ok.",
                     "rejected": f"a rambling unhelpful reply {i}",
                     "labeler": f"u{i % 3}", "subset": "chat" if i < 8 else "safety"})
    return write_jsonl(tmp_path / "eval.jsonl", rows)


def test_evaluate_writes_every_artifact(model_dir, eval_file, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(model_dir, str(eval_file), out, group_by=["labeler"], n_boot=100, progress=False)
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    assert m["pairs"] == 24
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece", "ece_equal_mass",
                "accuracy_top10", "accuracy_top25", "mean_margin"):
        v = m["overall"][key]
        assert v["value"] is not None and v["ci95"][0] <= v["value"] + 1e-9 <= v["ci95"][1] + 2e-9, key
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 24 and {"margin", "probability", "correct", "chosen_score"} <= set(preds[0])
    margins = np.array([p["margin"] for p in preds])
    assert m["overall"]["accuracy"]["value"] == pytest.approx(pairwise_accuracy(margins))
    assert set(m["groups"]["labeler"]) == {"u0", "u1", "u2"}
    assert sum(g["pairs"] for g in m["groups"]["labeler"].values()) == 24
    # length bias: half the pairs prefer the longer response, half the shorter
    lb = m["length_bias"]
    assert lb["longer_preferred"]["pairs"] == 12 and lb["shorter_preferred"]["pairs"] == 12
    longer = np.array([len(p["chosen"]) > len(p["rejected"]) for p in preds])
    expected = 0.5 * (pairwise_accuracy(margins[longer]) + pairwise_accuracy(margins[~longer]))
    assert lb["length_balanced_accuracy"]["value"] == pytest.approx(expected)
    assert lb["length_only_rules"] == {"prefer_longer": 0.5, "prefer_shorter": 0.5, "pairs": 24}
    assert sum(b["pairs"] for b in lb["by_length_ratio"].values()) == 24
    assert -1 <= lb["reward_length_correlation"]["spearman"] <= 1
    # RewardBench-style sections: weighted within, plain mean across
    sec = m["sections"]
    assert sec["field"] == "subset" and sec["per_section"]["chat"]["pairs"] == 16
    assert sec["aggregate"] == pytest.approx(np.mean([s["accuracy"] for s in sec["per_section"].values()]))
    assert [c["passed"] for c in m["invariance"]] == [True, True, True]
    for name in ("report.html", "reliability.png", "rewards.png", "accuracy_by_labeler.png", "training_curves.png"):
        assert (out / name).stat().st_size > 1000, name
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # texts are escaped
    assert f"{m['overall']['accuracy']['value']:.3f}" in page


def test_a_group_by_field_no_comparison_has_is_an_error_naming_the_fields_there(model_dir, eval_file, tmp_path):
    with pytest.raises(ValueError, match=r"group_by 'labeller': no comparison of .* has this field; fields there: "
                                         r"prompt, .*labeler"):
        evaluate(model_dir, str(eval_file), tmp_path / "e", group_by=["labeller"], n_boot=0, plots=False,
                 progress=False)


def test_chunked_streaming_gives_the_same_numbers(model_dir, eval_file, tmp_path, monkeypatch):
    from rewardlab.evaluation import predict

    a = evaluate(model_dir, str(eval_file), tmp_path / "a", n_boot=0, plots=False, progress=False)
    original = predict.score_stream
    monkeypatch.setattr("rewardlab.evaluation.run.score_stream",
                        lambda *args, **kw: original(*args, **{**kw, "chunk_size": 3}))
    b = evaluate(model_dir, str(eval_file), tmp_path / "b", n_boot=0, plots=False, progress=False)
    assert a.metrics["overall"]["accuracy"] == b.metrics["overall"]["accuracy"]
    assert a.metrics["overall"]["log_loss"]["value"] == pytest.approx(b.metrics["overall"]["log_loss"]["value"])


def test_rankings_get_rank_correlations_and_ties(model_dir, tmp_path, monkeypatch):
    """A scorer whose rewards are set by hand, so every ranking number has a closed form.

    Each prompt ranks four responses [1, 2, 3, 3] (five decided pairs and one tie). The model agrees on
    four prompts (rewards 3, 2, 1, 0.5), reverses two (0, 1, 2, 3) and scores one flat (1.5 each).
    Per agreeing prompt Spearman's rho is the Pearson correlation of the ranks (4, 3, 2, 1) and
    (4, 3, 1.5, 1.5): 4.5 / sqrt(5 * 4.5) = sqrt(0.9); Kendall's tau-b is 5 concordant of 6 pairs, one
    tied on the human side: 5 / sqrt(6 * 5); a reversed prompt gives minus those; the flat one has no
    rank correlation and is left out of the mean.
    """
    agree, reverse, flat = [3.0, 2.0, 1.0, 0.5], [0.0, 1.0, 2.0, 3.0], [1.5] * 4
    plan = [agree] * 4 + [reverse] * 2 + [flat]
    rows, table = [], {}
    for i, rewards in enumerate(plan):
        responses = [f"answer {k} to question {i}" for k in range(4)]
        rows.append({"prompt": f"question {i}", "responses": responses, "ranks": [1, 2, 3, 3]})
        table.update({(f"question {i}", r): x for r, x in zip(responses, rewards)})
    rm = RewardModel.from_pretrained(model_dir, device="cpu")
    monkeypatch.setattr(rm, "score_heads", lambda prompts, responses, **_: np.array(
        [[table[(p, r)]] * len(rm.heads) for p, r in zip(prompts, responses)], dtype=np.float64))
    out = evaluate(model_dir, str(write_jsonl(tmp_path / "r.jsonl", rows)), tmp_path / "out", n_boot=20,
                   plots=False, progress=False, model=rm).metrics
    assert out["pairs"] == 7 * 5  # per prompt, the 6 pairs of 4 responses minus the tie
    # decided pairs: all right where the model agrees, all wrong where it reverses, half (margin 0) where flat
    assert out["overall"]["accuracy"]["value"] == pytest.approx((4 * 5 + 2 * 0 + 0.5 * 5) / 35)
    # margins of (0,1) (0,2) (0,3) (1,2) (1,3): 1 + 2 + 2.5 + 1 + 1.5 agreeing, -(1 + 2 + 3 + 1 + 2) reversed
    assert out["overall"]["mean_margin"]["value"] == pytest.approx((4 * 8.0 - 2 * 9.0) / 35)
    # the tie (responses 2 and 3): |1 - 0.5| agreeing, |2 - 3| reversed, 0 flat
    assert out["ties"]["pairs"] == 7 and out["ties"]["mean_abs_margin"] == pytest.approx((4 * 0.5 + 2 * 1.0) / 7)
    r = out["ranking"]
    assert r["prompts"] == 6  # the flat prompt has no rank correlation
    assert r["spearman"]["value"] == pytest.approx((4 - 2) / 6 * np.sqrt(0.9))
    assert r["kendall"]["value"] == pytest.approx((4 - 2) / 6 * 5 / np.sqrt(30))
    for key in ("spearman", "kendall"):
        lo, hi = r[key]["ci95"]
        assert -1 <= lo <= hi <= 1


def test_fit_temperature_recovers_the_true_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)  # true logits
    won = rng.random(len(z)) < 1 / (1 + np.exp(-z))
    margins = np.where(won, z, -z) * 3.0  # an over-confident model: logits 3x too large
    assert fit_temperature(margins) == pytest.approx(3.0, rel=0.05)


def test_calibrate_stores_temperature_and_reports_ece(model_dir, eval_file, tmp_path):
    local = tmp_path / "model"
    shutil.copytree(model_dir, local)
    info = calibrate(str(local), str(eval_file), holdout=0.5)
    assert info["fit_pairs"] + info["check_pairs"] == 24 and info["ece_after"] >= 0
    rm = RewardModel.from_pretrained(str(local), device="cpu")
    assert rm.temperature == pytest.approx(info["temperature"])
    assert json.loads((local / "config.json").read_text())["rewardlab"]["calibration"]["fit_pairs"] == info["fit_pairs"]
    # the report then shows the calibrated curve beside the uncalibrated one
    after = evaluate(str(local), str(eval_file), tmp_path / "after", n_boot=20, progress=False)
    assert after.metrics["temperature"] == pytest.approx(info["temperature"])
    curves = _reliability_curves(after.metrics, np.array([json.loads(l)["margin"] for l in
                                                          (tmp_path / "after" / "predictions.jsonl").open()]))
    assert list(curves)[0] == "uncalibrated (T=1)" and list(curves)[1].startswith("calibrated (T=")
    with pytest.raises(ValueError, match="nope is not a local model folder with a config.json"):
        store_temperature(tmp_path / "nope", 1.0, {})


def test_invariance_checks_can_fail(model_dir):
    rm = RewardModel.from_pretrained(model_dir, device="cpu")
    prompts, a, b = ["p1", "p2", "p3"], ["first answer", "second", "third one here"], ["x", "y", "z"]
    assert all(c["passed"] for c in run_invariance_checks(rm, prompts, a, b))
    inner = rm.model.forward

    def leaky(input_ids, attention_mask, token_type_ids=None):  # a bug: rewards depend on the batch
        r = inner(input_ids, attention_mask, token_type_ids)
        return r + 0.1 * r.mean() + 0.01 * input_ids.shape[0] + 0.001 * input_ids.shape[1]

    rm.model.forward = leaky
    results = {c["check"]: c for c in run_invariance_checks(rm, prompts, a, b)}
    assert not results["batch"]["passed"] and not results["padding"]["passed"]
    assert results["batch"]["max_deviation"] > 1e-3


def test_compare_two_runs(model_dir, eval_file, tmp_path):
    evaluate(model_dir, str(eval_file), tmp_path / "e1", n_boot=20, plots=False, progress=False)
    evaluate(model_dir, str(eval_file), tmp_path / "e2", n_boot=20, plots=False, progress=False,
             data_cfg=DataConfig(max_examples=10))
    table = compare([tmp_path / "e1", tmp_path / "e2"], tmp_path / "cmp")
    assert table.count("\n") == 3 and "| 24 |" in table and "| 10 |" in table
    assert "length_balanced_accuracy" in table.splitlines()[0]
    assert (tmp_path / "cmp" / "compare_reliability.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no evaluation metrics.json found"):
        compare([tmp_path / "e1", tmp_path / "missing"], tmp_path / "cmp")


def test_report_renders_in_headless_chromium(model_dir, eval_file, tmp_path):
    browser = chromium_browser(tmp_path / "chrome")
    out = evaluate(model_dir, str(eval_file), tmp_path / "ev", group_by=["labeler"], n_boot=50, progress=False)
    try:
        browser.get((out.out_dir / "report.html").as_uri())
        text = browser.find_element("tag name", "body").text
        acc = out.metrics["overall"]["accuracy"]["value"]
        assert f"{acc:.3f}" in text and "pairwise accuracy" in text and "Invariance checks" in text
        assert "<script>alert(" in text  # shown as text, not run
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) >= 4 and all(done and width > 100 for done, width in images)
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        alerts = browser.execute_script("return typeof window.__alerted")
        assert alerts == "undefined"
        browser.save_screenshot(str(tmp_path / "report.png"))
    finally:
        browser.quit()
