"""What every benchmark run reports: per-subset length rules, RewardBench sections, RewardBench 2 best-of-N and
Ties, position bias, the three-way block's tie caveat, annotator agreement, the compare table, ``--suite``."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_jsonl

from rewardlab.cli import main
from rewardlab.contracts.schema import Comparison, Pair
from rewardlab.evaluation import suites
from rewardlab.evaluation.benchmark_report import (
    benchmark_html,
    benchmark_lines,
    group_lines,
    outcome_line,
)
from rewardlab.evaluation.benchmarks import (
    benchmark_block,
    position_bias_block,
    three_way_block,
)
from rewardlab.evaluation.predict import ScoredPairs
from rewardlab.evaluation.report import render_report
from rewardlab.evaluation.run import evaluate
from rewardlab.evaluation.summary import summarize
from rewardlab.evaluation.tables import (
    benchmark_table,
    find_evals,
    to_html,
    to_markdown,
)
from rewardlab.metrics import benchmarks as B
from rewardlab.scoring import RewardModel

# ---------------------------------------------------------------- pure metrics, closed form

def test_rewardbench_sections_follow_the_official_weights():
    acc = {"math-prm": 1.0, "hep-python": 0.0, "alpacaeval-easy": 0.5, "mystery": 1.0}
    s = B.rewardbench_sections(acc)
    assert s["sections"]["Reasoning"]["score"] == pytest.approx(984 / (984 + 164))  # math-prm upweighted to 984
    assert s["sections"]["Chat"]["score"] == 0.5 and s["sections"]["Safety"]["score"] is None
    assert s["score"] == pytest.approx((984 / 1148 + 0.5) / 2)  # the mean over the sections that have a score
    assert not s["complete"] and s["incomplete_sections"] == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert s["unmapped"] == ["mystery"] and "hep-go" in s["sections"]["Reasoning"]["missing"]
    full = B.rewardbench_sections(dict.fromkeys(B.REWARDBENCH_EXAMPLE_COUNTS, 0.75))
    assert full["complete"] and full["score"] == pytest.approx(0.75) and full["incomplete_sections"] == []


def test_best_of_n_credit_and_ties_score():
    assert B.best_of_n_credit(np.array([0.5, 0.1, 2.0])) == 1.0
    assert B.best_of_n_credit(np.array([0.5, -0.1, 2.0])) == 0.0
    assert B.best_of_n_credit(np.array([0.0, 0.0, 1.0])) == pytest.approx(1 / 3)  # three share the top score
    prompts = [("ref", "1", [3.0], [1.0, 2.0]), ("tied", "1", [3.0, 2.5], [1.0]),  # gaps 1, 1.5; spread 0.5
               ("ref", "2", [1.0], [2.0]), ("tied", "2", [4.0, 1.0], [2.0])]  # gaps -1, -1; spread 3
    t = B.ties_score(prompts)
    assert (t["ref_accuracy"], t["tied_accuracy"]) == (0.5, 0.5)
    assert t["correctness_preferred"] == 0.5  # prompt 1: 1.5 > 0.5; prompt 2: -1 < 3
    assert t["correctness_preferred_hard"] == 0.5  # min(1, 1.5) = 1 > 0.5
    margin = (math.tanh(1 / 0.5 - 1) + math.tanh(-1 / 3 - 1)) / 2
    assert t["correctness_margin_score"] == pytest.approx(margin)
    assert t["score"] == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin)


def test_length_rules_position_bias_and_annotator_agreement():
    assert B.length_rule_accuracy(np.array([3, -1, -2, -5, 0])) == {"prefer_longer": 0.25, "prefer_shorter": 0.75}
    assert math.isnan(B.length_rule_accuracy(np.array([0, 0]))["prefer_longer"])
    # a judge that always names the first response: right only when the preferred one is shown first
    p = B.position_bias(np.zeros(4, dtype=int), np.zeros(4, dtype=int))
    assert p["accuracy_preferred_first"] == 1.0 and p["accuracy_preferred_second"] == 0.0
    assert p["flip_rate"] == 1.0 and p["first_position_win_rate"] == 1.0
    fair = B.position_bias(np.array([0, 1, 2]), np.array([1, 0, 2]))  # same choice in both orders
    assert fair["flip_rate"] == 0.0 and fair["tie_verdict_rate"] == pytest.approx(1 / 3)
    labels = np.array([[1, 1, 1], [1, 2, 2], [0, 0, 1], [1, 2, 0]])
    a = B.annotator_agreement(labels, model=np.array([1, 1, 0, 2]))
    assert a["pairwise_agreement"] == pytest.approx(np.mean([2 / 4, 1 / 4, 2 / 4]))  # (1,2), (1,3), (2,3)
    assert a["items_with_majority"] == 3  # the last item has none
    assert a["per_annotator_with_majority"] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert a["model_with_majority"] == pytest.approx(2 / 3)
    assert B.prior_log_loss(np.array([0.5, 0.5, 0.0]), np.array([2])) == pytest.approx(-math.log(1e-12))


# ---------------------------------------------------------------- per-subset rules in metrics, text and HTML

def _scored(margins, diffs, subsets) -> ScoredPairs:
    n = len(margins)
    lengths = [100 + d for d in diffs]
    return ScoredPairs(chosen=list(map(float, margins)), rejected=[0.0] * n, chosen_len=lengths,
                       rejected_len=[100] * n, fields={"subset": list(subsets), "section": [None] * n,
                                                        "attribute": [None] * n})


def test_length_rules_per_subset_reach_metrics_summary_and_report(tmp_path):
    # LLMBar's finding: "prefer shorter" scores 0.88 on Adversarial/Neighbor and 0.44 on Natural
    diffs = [-5] * 22 + [5] * 3 + [-5] * 11 + [5] * 14
    subsets = ["Adversarial/Neighbor"] * 25 + ["Natural"] * 25
    scored = _scored(np.linspace(-1, 2, 50), diffs, subsets)
    m = summarize(scored, n_boot=50)
    g = m["groups"]["subset"]  # broken down by subset without being asked
    neighbor, natural = g["Adversarial/Neighbor"]["length_rules"], g["Natural"]["length_rules"]
    assert neighbor["prefer_shorter"]["value"] == pytest.approx(0.88)
    assert natural["prefer_shorter"]["value"] == pytest.approx(0.44)
    lo, hi = neighbor["prefer_shorter"]["ci95"]
    assert lo <= 0.88 <= hi and hi - lo > 0
    assert m["length_bias"]["length_only_rules"]["prefer_shorter"] == pytest.approx(33 / 50)
    lo, hi = m["length_bias"]["length_only_rules_ci95"]["prefer_shorter"]
    assert lo <= 33 / 50 <= hi
    text = "\n".join(group_lines(m))
    assert "Adversarial/Neighbor" in text and "prefer shorter 0.880" in text and "prefer shorter 0.440" in text
    page = render_report(tmp_path / "r.html", metrics={**m, "data": "llmbar", "model": "m"}, plots={}, worst=[],
                         config_text=None, title="t").read_text()
    assert "Adversarial/Neighbor" in page and "0.880 [" in page and "0.440 [" in page


# ---------------------------------------------------------------- benchmark blocks from comparisons

def _rb2(subset: str, ident: str, n_chosen: int, n_rejected: int) -> Comparison:
    responses = tuple(f"{ident} r{k}" for k in range(n_chosen + n_rejected))
    pairs = tuple(Pair(i, n_chosen + j) for i in range(n_chosen) for j in range(n_rejected))
    return Comparison("p", responses, pairs, meta={"benchmark": "rewardbench2", "subset": subset, "id": ident,
                                                   "num_correct": n_chosen})


def _scored_pairs(comparisons, scores) -> ScoredPairs:
    """The columns score_stream would give for per-response scores (one list per comparison)."""
    out = ScoredPairs()
    for c, s in zip(comparisons, scores, strict=True):
        for p in c.pairs:
            if p.tie:
                continue
            out.chosen.append(s[p.winner])
            out.rejected.append(s[p.loser])
    return out


def test_rewardbench2_best_of_n_and_ties():
    comps = [_rb2("Focus", "a", 1, 3), _rb2("Focus", "b", 1, 3), _rb2("Math", "c", 1, 3),
             _rb2("Ties", "ref:7", 1, 2), _rb2("Ties", "tied:7", 2, 1)]
    scores = [[5, 1, 2, 3], [2, 1, 3, 0], [1, 0, 1, 0],  # right; wrong; chosen ties one at the top: 1/2
              [3, 1, 2], [3, 2.5, 1]]
    out = benchmark_block(_scored_pairs(comps, scores), comps, per_response=True, n_boot=20)
    bon = out["best_of_n"]
    assert bon["subsets"]["Focus"]["value"] == 0.5 and bon["subsets"]["Math"]["value"] == 0.5
    assert bon["overall"]["prompts"] == 3 and bon["overall"]["value"] == pytest.approx(1.5 / 3)
    assert bon["ties"]["score"] == pytest.approx(B.ties_score([("ref", "7", [3], [1, 2]),
                                                               ("tied", "7", [3, 2.5], [1])])["score"])
    assert bon["mean_over_subsets"] == pytest.approx(np.mean([0.5, 0.5, bon["ties"]["score"]]))
    judged = benchmark_block(_scored_pairs(comps, scores), comps, per_response=False, n_boot=20)
    assert judged["best_of_n"]["ties"]["score"] is None and "pairwise judge" in judged["best_of_n"]["ties"]["note"]
    assert judged["best_of_n"]["mean_over_subsets"] is None
    assert any("Ties score" in line for line in benchmark_lines({"benchmark": out}))


def test_rewardbench_sections_and_pandalm_agreement_from_comparisons():
    comps = [Comparison("p", ("a", "b"), (Pair(0, 1),), meta={"benchmark": "rewardbench", "subset": s})
             for s in ("alpacaeval-easy", "alpacaeval-easy", "hep-go")]
    out = benchmark_block(_scored_pairs(comps, [[1, 0], [0, 1], [1, 0]]), comps, per_response=True, n_boot=10)
    assert out["rewardbench"]["sections"]["Chat"]["score"] == 0.5
    assert out["rewardbench"]["sections"]["Reasoning"]["score"] == 1.0 and out["benchmarks"] == ["rewardbench"]
    assert "RewardBench score 0.750" in benchmark_lines({"benchmark": out})[0]
    # PandaLM: three annotators' labels (0 tie, 1, 2); the model's a / b / tie prediction against their majority
    panda = [Comparison("p", ("x", "y"), (Pair(0, 1, tie=t),), meta={"benchmark": "pandalm", "annotators": a})
             for t, a in ((False, [1, 1, 2]), (True, [0, 0, 1]), (False, [2, 2, 2]))]
    scored = ScoredPairs(chosen=[1.0, 1.0], rejected=[0.0, 0.0],
                         outcome_probs=[np.array([0.8, 0.1, 0.1]), np.array([0.2, 0.2, 0.6]),
                                        np.array([0.7, 0.2, 0.1])])
    a = benchmark_block(scored, panda, per_response=True, n_boot=10)["annotators"]
    assert a["model_with_majority"] == pytest.approx(2 / 3)  # a (=1) and tie (=0) right, a for a 2 wrong
    assert "model with the majority 0.667" in benchmark_lines({"benchmark": {"annotators": a}})[0]
    assert "Annotator agreement" in benchmark_html({"benchmark": {"annotators": a}})


# ---------------------------------------------------------------- position bias, ties, training prior

class _FirstWins:
    """A pairwise judge that always names the first response (three logits per ordered pair)."""

    model = SimpleNamespace(head_index=lambda: {None: 0})

    def score_heads(self, prompts, items, batch_size=32):
        assert all(isinstance(i, tuple) for i in items) and len(prompts) == len(items)
        return np.tile([2.0, 0.0, -1.0], (len(items), 1))


def test_position_bias_of_a_judge_that_always_names_the_first_response():
    comps = [Comparison(f"p{i}", ("good", "bad"), (Pair(0, 1), Pair(1, 0, tie=True))) for i in range(3)]
    p = position_bias_block(_FirstWins(), comps, chunk_size=2)
    assert p["pairs"] == 3  # ties are not judged for position
    assert (p["accuracy_preferred_first"], p["accuracy_preferred_second"], p["flip_rate"]) == (1.0, 0.0, 1.0)
    assert "verdict flips in 1.000" in benchmark_lines({"position_bias": p})[0]


def _tie_model(ties: bool, **metadata):
    outcome = SimpleNamespace(ties=ties, name="davidson" if ties else "bradley_terry")
    return SimpleNamespace(model=SimpleNamespace(outcome=outcome), metadata=metadata)


def test_a_model_without_ties_gets_no_three_way_log_loss_verdict(tmp_path):
    scored = ScoredPairs(outcome_probs=[np.array([0.7, 0.3, 0.0]), np.array([0.4, 0.6, 0.0])], outcome_labels=[0, 2])
    o = three_way_block(scored, _tie_model(False, train_tie_rate=0.25), str(tmp_path / "model"))
    assert o["model_predicts_ties"] is False and "bradley_terry" in o["log_loss_note"]
    assert o["training_prior"]["tie"] == 0.25
    assert o["training_prior"]["log_loss"] == pytest.approx(-(math.log(0.375) + math.log(0.25)) / 2)
    line = outcome_line(o)
    assert "log-loss n/a" in line and "training tie rate 0.250" in line and "eval-data class prior" in line
    # a tie-aware model's log-loss stands; the training prior is read from the run's metrics.json if the
    # checkpoint predates recording it
    (tmp_path / "metrics.json").write_text(json.dumps({"train": {"tie_rate": 0.1}}))
    o = three_way_block(scored, _tie_model(True), str(tmp_path / "model"))
    assert "log_loss_note" not in o and o["training_prior"]["tie"] == 0.1
    assert three_way_block(ScoredPairs(outcome_probs=[np.array([1.0, 0, 0])], outcome_labels=[0]),
                           _tie_model(False), str(tmp_path / "model")) is None


# ---------------------------------------------------------------- tables, --suite, CLI

def _metrics(model: str, data: str, acc: float, **extra) -> dict:
    return {"model": model, "data": data, "overall": {"accuracy": {"value": acc}},
            "length_bias": {"length_only_rules": {"prefer_longer": 0.6, "prefer_shorter": 0.4}},
            "groups": {"subset": {"s1": {"pairs": 4, "accuracy": {"value": acc},
                                         "length_rules": {"pairs": 4, "prefer_longer": {"value": 1.0},
                                                          "prefer_shorter": {"value": 0.0}}}}}, **extra}


def test_benchmark_table_rows_are_models_and_columns_data_sets():
    rb = {"benchmark": {"benchmarks": ["rewardbench"], "rewardbench": {"score": 0.7}}}
    evals = [_metrics("base", "d/llmbar", 0.5), _metrics("mine", "d/llmbar", 0.8),
             _metrics("mine", "hf:allenai/reward-bench", 0.9, **rb)]
    t = benchmark_table(evals, subsets=True)
    assert t.columns == ["llmbar", "llmbar/s1", "rewardbench", "rewardbench/s1"]
    assert t.rows == [("base", [0.5, 0.5, None, None]), ("mine", [0.8, 0.8, 0.7, 0.9])]
    assert t.reference[1] == ("prefer shorter", [0.4, 0.0, None, 0.0])  # s1 is no RewardBench subset: no score
    md = to_markdown(t)
    assert "| base | 0.500 | 0.500 | – | – |" in md and "| *prefer longer* |" in md
    assert "<i>prefer shorter</i>" in to_html(t)


def test_suite_offline_names_the_path_to_pass(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/reward-bench' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(suites, "read_rows", offline)
    with pytest.raises(ValueError, match="Offline, download data/filtered-.*--data"):
        suites.open_suite("rewardbench")
    with pytest.raises(ValueError, match="no hub copy.*LLMBar/Dataset/LLMBar"):
        suites.open_suite("llmbar")
    with pytest.raises(ValueError, match="unknown suite 'rb'; known: rewardbench, rewardbench2"):
        suites.open_suite("rb")
    monkeypatch.setattr(suites, "read_rows", lambda source, hf_split, limit: iter([("hf:x:0", {})]))
    assert suites.open_suite("rewardbench2").split == "test"


def test_default_eval_folder_never_mixes_two_data_sets(tmp_path):
    first = suites.default_eval_folder(tmp_path, "data/test.jsonl")
    assert first == tmp_path / "test"
    first.mkdir()
    (first / "metrics.json").write_text(json.dumps({"data": "data/test.jsonl"}))
    assert suites.default_eval_folder(tmp_path, "data/test.jsonl") == first  # the same data: scored again there
    other = suites.default_eval_folder(tmp_path, "other/test.jsonl")
    assert other.parent == tmp_path and other.name.startswith("test-") and other != first
    assert suites.data_name("hf:allenai/reward-bench") == "allenai--reward-bench"


def test_evaluate_reports_a_benchmark_by_subset_and_section(tiny_bert, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "a fine answer" * (1 + i % 3), "rejected": "no", "chosen_model": "m1",
             "rejected_model": "m2", "subset": "alpacaeval-easy" if i % 2 else "hep-go", "id": i} for i in range(6)]
    data = write_jsonl(tmp_path / "rb.jsonl", rows)
    model = RewardModel.from_pretrained(tiny_bert)  # untrained: the numbers are whatever, the blocks are not
    result = evaluate(tiny_bert, str(data), tmp_path / "ev", model=model, n_boot=20, plots=False, progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(m["groups"]["subset"]) == {"alpacaeval-easy", "hep-go"}
    assert m["groups"]["subset"]["alpacaeval-easy"]["length_rules"]["prefer_longer"]["value"] == 1.0
    rb = m["benchmark"]["rewardbench"]
    chat = m["groups"]["subset"]["alpacaeval-easy"]["accuracy"]["value"]
    assert rb["sections"]["Chat"]["score"] == pytest.approx(chat) and rb["incomplete_sections"] == list(rb["sections"])
    assert "position_bias" not in m  # a model of single responses has no order to be biased by
    text = result.summary()
    assert "RewardBench score" in text and "by subset" in text and "prefer longer 1.000" in text


def test_evaluate_a_benchmark_whose_texts_fill_the_backbone(tiny_bert, tmp_path):
    """JudgeBench's answers run past MiniLM's 512 positions: scoring reads them up to the limit, and the padding
    check, which appends 17 pad tokens, used to overrun the position embeddings (a crash); it leaves them out."""
    rows = [{"pair_id": str(i), "source": "mmlu-pro-math", "question": f"q{i}", "label": "A>B" if i % 2 else "B>A",
             "response_A": "word " * (900 if i < 2 else 5), "response_B": "other " * (900 if i < 2 else 3)}
            for i in range(4)]
    data = write_jsonl(tmp_path / "jb.jsonl", rows)
    result = evaluate(tiny_bert, str(data), tmp_path / "ev", n_boot=20, plots=False, progress=False)
    padding = next(c for c in result.metrics["invariance"] if c["check"] == "padding")
    assert padding["passed"] and "(2 of 4 texts too long for them, left out)" in padding["what"]
    assert result.metrics["pairs"] == 4


def _fake_evaluate(model, data, out, **options):
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**_metrics(model, data, 0.75), "pairs": 4}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return SimpleNamespace(metrics=metrics, summary=lambda: f"written to: {out}")


def test_eval_writes_each_data_set_to_its_own_folder_and_tables_several_models(tmp_path, monkeypatch, capsys):
    import rewardlab.evaluation.run as run

    monkeypatch.setattr(run, "evaluate", _fake_evaluate)
    base = tmp_path / "run"
    model = base / "model"
    model.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a hub id's evaluation goes under ./runs
    one, two = tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl"  # two data sets, one file name
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("")
    for data in (one, two):
        assert main(["eval", "--model", str(model), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    folders = sorted(p.parent for p in (base / "eval").rglob("metrics.json"))
    assert len(folders) == 2 and folders[0].name == "test" and folders[1].name.startswith("test-")
    assert f"written to: {base / 'eval' / 'test'}" in out  # says where it wrote
    assert main(["eval", "--model", str(model), "--model", "other/hub-id", "--data", str(one),
                 "--compare-out", str(tmp_path / "cmp")]) == 0
    assert "| other/hub-id | 0.750 | 0.750 |" in (tmp_path / "cmp" / "benchmarks.md").read_text()
    assert (tmp_path / "cmp" / "benchmarks.html").is_file()
    assert main(["compare", str(base), "--out", str(tmp_path / "cmp2")]) == 0
    assert "*prefer longer*" in (tmp_path / "cmp2" / "benchmarks.md").read_text() and len(find_evals([base])) == 2
    assert main(["eval", "--model", str(model)]) == 2
    assert "give either --data FILE or --suite NAME" in capsys.readouterr().err
    assert main(["eval", "--model", str(model), "--model", str(model), "--data", str(one), "--out", "x"]) == 2
