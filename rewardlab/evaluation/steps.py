"""``evaluate_solutions(model, solutions, out)``: score every step, summarise, plot and report a process reward
model on stepwise data.

Writes into ``out``: ``metrics.json`` (:func:`rewardlab.metrics.steps.process_summary`: ``steps``,
``first_error``, ``solution_accuracy`` per aggregate, ``baselines``, ``counts``, each number with a bootstrap
95 % interval over solutions), ``step_predictions.jsonl`` (one row per solution with its step probabilities),
``reliability.png`` and ``report.html`` (the headline, the tables and example solutions with each step's
probability).

The model is anything with ``score_steps(prompt, steps) -> list[float]`` (P(step correct) per step), such as a
``RewardModel`` of kind ``prm``; when it also has ``score_steps_batch(prompts, steps_lists)`` that is used,
``batch_size`` solutions at a time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from rewardlab.contracts.steps import Solution
from rewardlab.evaluation import plots as P
from rewardlab.evaluation.report import render_steps_report
from rewardlab.metrics.steps import predicted_first_error, process_summary

log = logging.getLogger(__name__)


class StepScorer(Protocol):
    def score_steps(self, prompt: str, steps: Sequence[str]) -> list[float]:
        """One probability per step that the step is correct."""


def score_solutions(model: StepScorer, solutions: Sequence[Solution], *, batch_size: int = 32
                    ) -> list[list[float]]:
    """Each solution's step probabilities, checked: one number in [0, 1] per step, or NaN for a step past what
    the model reads."""
    batched = getattr(model, "score_steps_batch", None)
    if callable(batched):
        scores: list = []
        for i in range(0, len(solutions), batch_size):
            chunk = solutions[i:i + batch_size]
            scores += batched([s.prompt for s in chunk], [list(s.steps) for s in chunk])
    else:
        scores = [model.score_steps(s.prompt, list(s.steps)) for s in solutions]
    out = []
    for k, (s, p) in enumerate(zip(solutions, scores)):
        p = [float(x) for x in p]
        if len(p) != len(s.steps) or not all(0.0 <= x <= 1.0 or math.isnan(x) for x in p):
            raise ValueError(f"solution {s.source or k}: the model gave {len(p)} scores {p[:8]} for {len(s.steps)} "
                             "steps; score_steps must return one probability in [0, 1] per step")
        out.append(p)
    return out


def pick_examples(solutions: Sequence[Solution], probabilities: Sequence[Sequence[float]], k: int = 2
                  ) -> list[dict]:
    """The first solution with an error, then the first correct one, then the next ones in order, up to ``k``."""
    with_error = [i for i, s in enumerate(solutions) if not s.correct]
    correct = [i for i, s in enumerate(solutions) if s.correct]
    order = with_error[:1] + correct[:1] + [i for i in range(len(solutions)) if i not in with_error[:1] + correct[:1]]
    return [{"prompt": solutions[i].prompt, "steps": list(solutions[i].steps), "labels": list(solutions[i].labels),
             "probabilities": list(probabilities[i]), "source": solutions[i].source} for i in order[:k]]


def _write_predictions(path: Path, solutions: Sequence[Solution], probabilities: Sequence[Sequence[float]],
                       threshold: float) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for s, p in zip(solutions, probabilities):
            fh.write(json.dumps({"source": s.source, "prompt": s.prompt, "steps": list(s.steps),
                                 "labels": list(s.labels), "probabilities": [None if math.isnan(x) else x for x in p],
                                 "first_error": s.first_error,
                                 "predicted_first_error": predicted_first_error(p, threshold)}) + "\n")


def evaluate_solutions(model: StepScorer, solutions: Sequence[Solution], out_dir: str | Path, *,
                       threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, majority: bool | None = None,
                       batch_size: int = 32, examples: int = 2, plots: bool = True,
                       title: str = "Process reward model evaluation", info: dict | None = None) -> dict:
    """Score ``solutions`` with ``model`` and write metrics, predictions, the reliability plot and the report.

    Args:
        threshold: a step with probability below it is predicted wrong; a solution is predicted correct when
            its aggregate is at least it.
        majority: the majority-class baseline's prediction (True = correct), e.g. the training data's; by
            default this data's.
        examples: how many solutions the report shows step by step.
        info: extra entries for ``metrics.json`` (the model's path, the data's name, ...).

    Returns:
        The metrics written to ``metrics.json``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold}: must lie strictly between 0 and 1")
    solutions = list(solutions)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probabilities = score_solutions(model, solutions, batch_size=batch_size)
    # A solution the model could not read to its end (NaN steps) cannot be judged: leave it out, and say so.
    scored = [i for i, p in enumerate(probabilities) if not any(math.isnan(x) for x in p)]
    if solutions and not scored:
        raise ValueError(f"all {len(solutions)} solutions are longer than the model reads (NaN step scores); raise "
                         "the model's max_length or cut the solutions")
    if len(scored) < len(solutions):
        log.warning("%d solution(s) longer than the model reads are left out of the metrics",
                    len(solutions) - len(scored))
    metrics = {**(info or {}), **process_summary([probabilities[i] for i in scored],
                                                 [solutions[i].labels for i in scored], threshold=threshold,
                                                 n_boot=n_boot, seed=seed, majority=majority)}
    metrics["counts"]["left_out_too_long"] = len(solutions) - len(scored)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_predictions(out_dir / "step_predictions.jsonl", solutions, probabilities, threshold)
    if plots:
        figures = {"reliability": P.reliability_diagram({"steps": metrics["calibration"]["bins_uniform"]},
                                                        out_dir / "reliability.png")}
        render_steps_report(out_dir / "report.html", metrics=metrics, plots=figures,
                            examples=pick_examples([solutions[i] for i in scored],
                                                   [probabilities[i] for i in scored], examples), title=title)
    return metrics


def evaluate_stepwise(model, data: str, out_dir: str | Path, *, data_cfg, batch_size: int = 32,
                      plots: bool = True, n_boot: int = 1000) -> dict:
    """``rewardlab eval`` on stepwise data: read ``data`` (:func:`rewardlab.data.stepwise.load_solutions`) and
    :func:`evaluate_solutions` with ``model`` (a process reward model) into ``out_dir``."""
    from rewardlab.data.stepwise import load_solutions

    if getattr(model, "kind", None) is not None and model.kind.name != "prm":
        raise ValueError(f"{data} holds stepwise data (a label per step); model.kind={model.kind.name} scores whole "
                         "responses: evaluate a process reward model (model.kind=prm) on it")
    solutions, report = load_solutions(data, data_cfg)
    return evaluate_solutions(model, solutions, out_dir, batch_size=batch_size, plots=plots, n_boot=n_boot,
                              info={"data": data, "data_report": report.summary()})


def summary_lines(metrics: dict) -> str:
    """The headline of :func:`evaluate_solutions`' metrics in a few lines, for the command line and the demo."""

    def f(m: dict) -> str:
        lo, hi = m["ci95"]
        return "–" if m["value"] is None else f"{m['value']:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")

    s, fe, c = metrics["steps"], metrics["first_error"], metrics["counts"]
    lines = [(f"solutions: {c['solutions']} ({c['solutions_with_error']} with an error), steps: {c['steps']} "
              f"({c['wrong_steps']} wrong)"),
             f"step accuracy: {f(s['step_accuracy'])}", f"wrong-step F1: {f(s['wrong_step_f1'])}",
             f"ROC-AUC: {f(s['roc_auc'])}", f"ECE: {f(s['ece'])}",
             (f"first-error F1: {f(fe['f1'])} (with an error {f(fe['error_accuracy'])}, correct "
              f"{f(fe['correct_accuracy'])})")]
    lines += [f"solution accuracy ({how}): {f(m)}" for how, m in metrics["solution_accuracy"].items()]
    b = metrics["baselines"]
    lines.append(f"baselines: majority class ({b['majority_class']['predicts']}) {f(b['majority_class'])}, "
                 f"last step only {f(b['last_step_only'])}, last step's label {f(b['last_step_label'])}")
    return "\n".join(lines)
