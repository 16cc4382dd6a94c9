"""evaluate_solutions with stand-in models: the files it writes, the numbers in them, the report's steps."""

import json

import pytest

from rewardlab.contracts.steps import Solution
from rewardlab.evaluation.report import render_solution_steps
from rewardlab.evaluation.steps import (
    evaluate_solutions,
    score_solutions,
    summary_lines,
)
from rewardlab.metrics.steps import process_summary

T, F = True, False
SOLUTIONS = [
    Solution("Compute 2 + 3 * 4 <b>now</b>.", ("3 * 4 = 12", "2 + 12 = 15", "The answer is 15."), (T, F, F),
             source="f:1"),
    Solution("Convert 2 km to m.", ("2 km = 2000 m", "The answer is 2000 m."), (T, T), source="f:2"),
    Solution("Compute 5 + 5.", ("5 + 5 = 10", "The answer is 10."), (T, T), source="f:3"),
    Solution("Compute 9 - 4.", ("9 - 4 = 6", "The answer is 6."), (F, F), source="f:4"),
]


class FakePRM:
    """Deterministic score_steps: a step ending in an even number is judged right (0.9), otherwise wrong (0.2)."""

    def __init__(self):
        self.calls = 0

    def score_steps(self, prompt, steps):
        self.calls += 1
        return [0.9 if int(step.rstrip(". m").split()[-1]) % 2 == 0 else 0.2 for step in steps]


class BatchedPRM(FakePRM):
    def __init__(self):
        super().__init__()
        self.batches = []

    def score_steps(self, prompt, steps):
        raise AssertionError("the batched form should be used")

    def score_steps_batch(self, prompts, steps):
        self.batches.append(len(prompts))
        return [FakePRM.score_steps(self, p, s) for p, s in zip(prompts, steps)]


def test_evaluate_writes_metrics_predictions_plot_and_report(tmp_path):
    model = FakePRM()
    metrics = evaluate_solutions(model, SOLUTIONS, tmp_path, n_boot=20, info={"model": "fake"})
    assert model.calls == 4
    # FakePRM gives f:1 .9 .2 .2 (error found at step 1), f:2 and f:3 .9 .9, f:4 .9 .9 (its error at step 0 missed)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics and metrics["model"] == "fake"
    assert {"steps", "first_error", "solution_accuracy", "baselines", "counts", "calibration"} <= set(metrics)
    expected = process_summary([model.score_steps(s.prompt, s.steps) for s in SOLUTIONS], [s.labels for s in SOLUTIONS],
                               n_boot=20)
    assert metrics["steps"] == expected["steps"]
    assert metrics["first_error"]["error_accuracy"]["value"] == 0.5  # f:1 found at step 1; f:4's "9 - 4 = 6" missed
    assert metrics["first_error"]["correct_accuracy"]["value"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "step_predictions.jsonl").read_text().splitlines()]
    assert [(r["source"], r["first_error"], r["predicted_first_error"]) for r in rows] == [
        ("f:1", 1, 1), ("f:2", None, None), ("f:3", None, None), ("f:4", 0, None)]
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    page = (tmp_path / "report.html").read_text()
    assert "&lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page  # user text is escaped
    assert "first-error F1" in page and page.count('class="solution"') == 2  # one with an error, one correct


def test_batched_scoring_is_used_when_the_model_has_it(tmp_path):
    model = BatchedPRM()
    evaluate_solutions(model, SOLUTIONS, tmp_path, n_boot=0, batch_size=3, plots=False)
    assert model.batches == [3, 1]
    assert not (tmp_path / "report.html").exists() and (tmp_path / "metrics.json").exists()


class Logits(FakePRM):
    def score_steps(self, prompt, steps):
        return [2.5] * len(steps)


class TooFew(FakePRM):
    def score_steps(self, prompt, steps):
        return [0.5]


@pytest.mark.parametrize("model", [Logits(), TooFew()])
def test_a_model_that_does_not_give_one_probability_per_step_is_named(model):
    with pytest.raises(ValueError, match="solution f:1: the model gave .* one probability in \\[0, 1\\] per step"):
        score_solutions(model, SOLUTIONS)


class Truncating(FakePRM):
    """Reads at most two steps, as a backbone with a short limit does: the rest are NaN."""

    def score_steps(self, prompt, steps):
        return (super().score_steps(prompt, steps[:2]) + [float("nan")] * len(steps))[:len(steps)]


def test_solutions_the_model_cannot_read_to_the_end_are_left_out_and_counted(tmp_path):
    metrics = evaluate_solutions(Truncating(), SOLUTIONS, tmp_path, n_boot=0, plots=False)
    assert metrics["counts"]["left_out_too_long"] == 1 and metrics["counts"]["solutions"] == 3
    first = json.loads((tmp_path / "step_predictions.jsonl").read_text().splitlines()[0])
    assert first["probabilities"] == [0.9, 0.2, None]  # still written, as valid JSON


def test_threshold_must_be_a_probability(tmp_path):
    with pytest.raises(ValueError, match="threshold=1.0"):
        evaluate_solutions(FakePRM(), SOLUTIONS, tmp_path, threshold=1.0)


def test_a_solution_renders_escaped_and_colour_coded():
    html = render_solution_steps("2 < 3?", ["a <i>", "b & c", "d"], [0.9, 0.1, 0.6], [T, F, F])
    assert "a &lt;i&gt;" in html and "b &amp; c" in html and "2 &lt; 3?" in html
    assert "hsl(108," in html and "hsl(12," in html  # green for 0.9, red for 0.1
    assert html.count('class="flag"') == 1 and html.index('class="flag"') < html.index("b &amp; c")
    assert html.count("✓") == 1 and html.count("✗") == 2
    assert "label" not in render_solution_steps("p", ["s"], [0.4])


def test_summary_lines_give_the_headline_and_both_baselines(tmp_path):
    metrics = evaluate_solutions(FakePRM(), SOLUTIONS, tmp_path, n_boot=10, plots=False)
    text = summary_lines(metrics)
    assert "step accuracy: " in text and "first-error F1: " in text
    assert "majority class (correct) 0.500" in text and "last step only" in text
