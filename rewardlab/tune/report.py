"""The tuning report: Optuna's plots as PNGs, and one self-contained ``report.html`` holding them.

Plots come from ``optuna.visualization.matplotlib`` (history, parameter importances,
parallel coordinates, slices, intermediate values, and the Pareto front with several
metrics). A plot Optuna cannot draw yet (importances need two complete trials) is
listed with the reason instead.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.trial import TrialState
from optuna.visualization import matplotlib as ovm

from rewardlab.evaluation.report import CSS, _img, _table

SURPLUS_ATTR = "rewardlab:surplus"  # user attribute of a trial given back unrun: other workers used the budget


def write_atomic(path: Path, text: str) -> None:
    """Workers may finish at once: each writes a whole file, the last one wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial; with several metrics, the Pareto-optimal one best on the first."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(study.best_trials, key=lambda t: sign * t.values[0])


def _cell(value):
    return f"{value:.4g}" if isinstance(value, float) else value  # learning rates would read 0.000


def _plots(metrics: Sequence[str]) -> dict[str, tuple[str, Callable]]:
    """name -> (title, draw(study)); with several metrics, single-metric plots show the first."""
    first = {"target": (lambda t: t.values[0]) if len(metrics) > 1 else None, "target_name": metrics[0]}
    plots = {
        "history": (f"Optimisation history ({metrics[0]})", lambda s: ovm.plot_optimization_history(s, **first)),
        "importances": (f"Parameter importances ({metrics[0]})", lambda s: ovm.plot_param_importances(s, **first)),
        "parallel": (f"Parallel coordinates ({metrics[0]})", lambda s: ovm.plot_parallel_coordinate(s, **first)),
        "slice": (f"Slice plots ({metrics[0]})", lambda s: ovm.plot_slice(s, **first)),
    }
    if len(metrics) == 1:
        plots["intermediate"] = ("Validation curves (pruned trials stop early)", ovm.plot_intermediate_values)
    elif len(metrics) in (2, 3):
        plots["pareto"] = ("Pareto front", lambda s: ovm.plot_pareto_front(s, target_names=list(metrics)))
    return plots


def _save(drawn, path: Path) -> Path:
    fig = np.ravel(drawn)[0].figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def importances(study: optuna.Study, metrics: Sequence[str]) -> dict[str, float]:
    """fANOVA importance of each parameter for the first metric ({} until Optuna can estimate it)."""
    target = (lambda t: t.values[0]) if len(metrics) > 1 else None
    try:
        with warnings.catch_warnings():  # "importances will be equal" while all trials tie
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study, target=target).items()}
    except (ValueError, RuntimeError):
        return {}


def write_report(study: optuna.Study, folder: Path, metrics: Sequence[str], best: optuna.trial.FrozenTrial,
                 best_yaml: str) -> Path:
    """Write the plots, ``summary.json`` and ``report.html`` into ``folder``; returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]
    drawn, skipped = {}, {}
    for name, (title, draw) in _plots(metrics).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drawn[name] = (title, _save(draw(study), folder / f"{name}.png"))
        except (ValueError, RuntimeError, IndexError) as err:
            skipped[name] = f"{title}: not drawn ({err})"
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    summary = {"study": study.study_name, "metrics": list(metrics), "trials": counts,
               "best": {"number": best.number, "values": dict(zip(metrics, best.values)), "params": best.params},
               "importances": importances(study, metrics)}
    write_atomic(folder / "summary.json", json.dumps(summary, indent=2))

    params = sorted({k for t in trials for k in t.params})
    rows = [[_cell(c) for c in [t.number, t.state.name.lower(), *(t.values or [None] * len(metrics)),
                                t.user_attrs.get("pruned_at_step"), *(t.params.get(k) for k in params),
                                t.user_attrs.get("worker")]] for t in trials]
    parts = [f"<h1>Hyperparameter search: {html.escape(study.study_name)}</h1>",
             '<p class="sub">' + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + "</p>",
             f"<h2>Best trial ({best.number})</h2>" + _table(["metric", "value"], [
                 (m, _cell(v)) for m, v in zip(metrics, best.values)])
             + _table(["parameter", "value"], [(k, _cell(v)) for k, v in best.params.items()])]
    for name, (title, path) in drawn.items():
        parts.append(f"<h2>{html.escape(title)}</h2>" + _img(path, title))
        if name == "importances" and summary["importances"]:
            parts.append(_table(["parameter", "importance"], [(k, _cell(v)) for k, v in
                                                              summary["importances"].items()]))
    if skipped:
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped.values()) + "</ul>")
    parts.append("<h2>Trials</h2>" + _table(["trial", "state", *metrics, "pruned at step", *params, "worker"], rows))
    parts.append("<h2>best.yaml</h2><pre>" + html.escape(best_yaml) + "</pre>")
    title = f"rewardlab tune: {study.study_name}"
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    write_atomic(folder / "report.html", page)
    return folder / "report.html"
