"""The search: open the shared study, run this worker's share of the trials, write ``best.yaml`` and the report.

A trial is ``run_experiment(cfg)`` with sampled options in ``<out>/trials/trial-NNNN``; the trainer reports each
validation evaluation to the trial, which a pruner may stop. The budget (``--trials``) is the study's: every
worker counts the trials in the storage before and during its run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from rewardlab.config import load_config
from rewardlab.train.experiment import run_experiment
from rewardlab.tune.report import SURPLUS_ATTR, best_trial, write_atomic, write_report
from rewardlab.tune.settings import TuneSettings
from rewardlab.tune.space import (
    direction,
    load_space,
    override,
    suggest,
    trainer_metrics,
)
from rewardlab.tune.storage import open_storage

# --------------------------------------------------------------------------- budget


def _counted(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials that use the budget: all but failed ones that were retried and surplus ones (queued ones count)."""
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return sum(1 for t in trials if not t.user_attrs.get(SURPLUS_ATTR) and not (
        t.state == TrialState.FAIL and t.number in retried))


def _to_run(trials: Sequence[optuna.trial.FrozenTrial], budget: int) -> int:
    """Trials still to start: the queued ones (retries, enqueued trials) and the budget left after them."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(budget - _counted(trials), 0) + waiting


def _make_pruner(settings: TuneSettings) -> optuna.pruners.BasePruner:
    choice = settings.pruner or ("median" if len(settings.metrics) == 1 else "none")
    if choice != "none" and len(settings.metrics) > 1:
        raise ValueError(f"--pruner {choice} needs a single --metric (Optuna cannot prune multi-objective "
                         f"studies); got {', '.join(settings.metrics)}")
    if choice == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials)
    if choice == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _stop_at_budget(trials: int):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _to_run(study.get_trials(deepcopy=False), trials) == 0:
            study.stop()
    return callback


# --------------------------------------------------------------------------- trials


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class _Objective:
    """One trial: sample options, train with them in ``<out>/trials/trial-NNNN``, return the metric(s)."""

    def __init__(self, settings: TuneSettings, space: dict, base: list[str]):
        self.settings, self.space, self.base = settings, space, base
        self.out = Path(settings.out)

    def __call__(self, trial: optuna.Trial):
        s = self.settings
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if _counted(earlier) >= s.trials and not trial.params:  # a worker took the last one at the same moment
            trial.set_user_attr(SURPLUS_ATTR, True)
            trial.study.stop()
            raise optuna.TrialPruned("budget already used by other workers")
        params = {name: suggest(trial, name, dist) for name, dist in self.space.items()}
        run_dir = self.out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", _worker())
        cfg = load_config(s.config, [*self.base, *s.trial_overrides, *(override(k, v) for k, v in params.items()),
                                     override("train.output_dir", str(run_dir)),
                                     override("train.save_model", s.save_models)])
        record = {"number": trial.number, "study": s.study, "worker": _worker(), "params": params}
        try:
            result = run_experiment(cfg, on_evaluate=self._reporter(trial))
        except optuna.TrialPruned as pruned:
            write_atomic(run_dir / "trial.json", json.dumps({**record, "state": "pruned", "reason": str(pruned)},
                                                             indent=2))
            print(f"trial {trial.number} pruned: {pruned} ({_params_text(params)})", flush=True)
            raise
        finally:
            if not s.save_models:  # resume states hold the weights too
                shutil.rmtree(run_dir / "states", ignore_errors=True)
        values = [float(result.eval_metrics[m]) for m in s.metrics]
        write_atomic(run_dir / "trial.json", json.dumps({**record, "state": "complete",
                                                          "values": dict(zip(s.metrics, values))}, indent=2))
        print(f"trial {trial.number} complete: " + ", ".join(f"{m} {v:.4f}" for m, v in zip(s.metrics, values))
              + f" ({_params_text(params)})", flush=True)
        return values[0] if len(values) == 1 else values

    def _reporter(self, trial: optuna.Trial):
        """The trainer's ``on_evaluate``: report the metric to the trial, stop the run when the pruner says so."""
        metrics, metric = self.settings.metrics, self.settings.metrics[0]

        def on_evaluate(step: int, values: dict) -> None:
            if len(metrics) > 1:  # Optuna prunes single-objective studies only
                return
            trial.report(float(values[metric]), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned(f"{metric} {values[metric]:.4f} at step {step}")

        return on_evaluate


# --------------------------------------------------------------------------- the search


@dataclass
class TuneResult:
    study: optuna.Study
    best_config: Path | None  # None until a trial completes
    report: Path | None
    refit: object | None = None  # TrainResult of --refit


def _open_study(settings: TuneSettings, storage) -> optuna.Study:
    directions = [direction(m) for m in settings.metrics]
    study = optuna.create_study(storage=storage, study_name=settings.study, directions=directions,
                                sampler=optuna.samplers.TPESampler(seed=settings.seed),
                                pruner=_make_pruner(settings), load_if_exists=True)
    names = study.metric_names
    if [d.name.lower() for d in study.directions] != directions or (names and names != list(settings.metrics)):
        raise ValueError(f"study {settings.study!r} already exists optimising {', '.join(names or ['?'])}; "
                         f"this command asks for {', '.join(settings.metrics)}: use another --study")
    if names is None:
        study.set_metric_names(list(settings.metrics))
    return study


def _write_best(settings: TuneSettings, study: optuna.Study, best: optuna.trial.FrozenTrial,
                base: list[str]) -> TuneResult:
    """``best.yaml`` (the base config with the best trial's options, without the trial budget) and the report."""
    out = Path(settings.out)
    best_cfg = load_config(settings.config, [*base, *(override(k, v) for k, v in best.params.items()),
                                             override("train.output_dir", str(out / "best")),
                                             override("train.save_model", True)])
    values = ", ".join(f"{m} {v:.4f}" for m, v in zip(settings.metrics, best.values))
    best_yaml = (f"# best trial {best.number} of study {settings.study!r}: {values}\n"
                 f"# rewardlab train --config {out / 'best.yaml'}\n"
                 + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "best.yaml", best_yaml)
    report = write_report(study, out / "report", settings.metrics, best, best_yaml)
    print(f"best trial {best.number}: {values} ({_params_text(best.params)})\n"
          f"best config: {out / 'best.yaml'}\nreport: {report}", flush=True)
    return TuneResult(study=study, best_config=out / "best.yaml", report=report)


def run_tune(settings: TuneSettings) -> TuneResult:
    """Run this worker's share of the study, then write ``best.yaml`` and the report (and refit on request)."""
    out = Path(settings.out)
    known = trainer_metrics()
    for metric in settings.metrics:
        if metric not in known:
            raise ValueError(f"--metric {metric}: the trainer does not report it; choose from {', '.join(known)}")
    base = [override("train.metric_for_best", settings.metrics[0]), *settings.overrides]
    space = load_space(settings.space, settings.config, [*base, *settings.trial_overrides])
    cfg = load_config(settings.config, [*base, *settings.trial_overrides])
    if not (cfg.data.eval or cfg.data.eval_fraction > 0):
        raise ValueError("tuning needs validation data: set data.eval, or data.eval_fraction > 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = _open_study(settings, open_storage(settings.storage, out, settings.heartbeat))
    optuna.storages.fail_stale_trials(study)  # before counting: a dead worker's trial is retried, not counted
    remaining = _to_run(study.get_trials(deepcopy=False), settings.trials)
    print(f"study {settings.study!r}: {settings.trials} trials, {remaining} to start"
          + (f"; worker {_worker()} joins" if remaining else ""), flush=True)
    if remaining:
        study.optimize(_Objective(settings, space, base), n_trials=remaining, timeout=settings.timeout,
                       callbacks=[_stop_at_budget(settings.trials)], gc_after_trial=True)
    best = best_trial(study)
    if best is None:
        print("no trial has completed yet; best.yaml and the report come when one has")
        return TuneResult(study=study, best_config=None, report=None)
    result = _write_best(settings, study, best, base)
    if settings.refit:
        print(f"refit: training best.yaml in full -> {out / 'best'}", flush=True)
        result.refit = run_experiment(load_config(out / "best.yaml"))
    return result
