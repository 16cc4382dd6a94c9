"""Hyperparameter search with Optuna: one study, shared by any number of workers.

Every worker runs the same command; they meet in one study through its storage (a
SQLite file by default, Optuna's journal file for processes sharing a file system,
any SQLAlchemy URL for many machines). ``--trials N`` is the study's budget, not one
worker's: trials are counted in the storage, so N trials run once between all workers.

A trial is ``train(cfg)`` with sampled options; the trainer reports each validation
evaluation to the trial, which a pruner may stop. A worker that dies leaves a trial
whose heartbeat goes stale; the next trial any worker starts marks it failed and
queues a retry with the same parameters.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements; no public name
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from rewardlab.config import describe, load_config, parse_yaml
from rewardlab.metrics import is_improvement, pairwise_summary
from rewardlab.train.run import train
from rewardlab.tune_report import best_trial, write_atomic, write_report

PRUNERS = ("none", "median", "hyperband")
_HEARTBEAT = "rewardlab:heartbeat"
_SURPLUS = "rewardlab:surplus"


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """What to search and how: the flags of ``rewardlab tune`` (its ``--help`` says what each one does)."""

    space: str
    trials: int  # the study's budget, over all workers
    config: str | None = None
    overrides: tuple = ()  # --set: base config, trials and best.yaml alike
    trial_overrides: tuple = ()  # --trial-set: trials only (quick budgets)
    out: str = "runs/tune"
    storage: str | None = None  # default sqlite:///<out>/study.db
    study: str = "rewardlab"
    metrics: tuple = ("accuracy",)
    pruner: str | None = None  # default median with one metric, else none
    pruner_startup_trials: int = 3  # median: trials completed before pruning starts
    timeout: float | None = None
    seed: int | None = None
    heartbeat: int = 60
    save_models: bool = False
    refit: bool = False

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ValueError(f"--trials={self.trials} must be >= 0")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise ValueError(f"--pruner={self.pruner!r}; choose one of {', '.join(PRUNERS)}")
        if self.heartbeat <= 0:
            raise ValueError(f"--heartbeat={self.heartbeat} must be > 0 seconds")
        if not self.metrics:
            raise ValueError("give at least one --metric")


# --------------------------------------------------------------------------- search space


def trainer_metrics() -> list[str]:
    """Validation metrics each evaluation reports (the keys of the trainer's summary)."""
    summary = pairwise_summary(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    return [k for k, v in summary.items() if isinstance(v, float)]


def direction(metric: str) -> str:
    """``minimize`` for loss-like metrics (as the trainer's best-model choice sees them), else ``maximize``."""
    return "minimize" if is_improvement(metric, 0.0, 1.0) else "maximize"


def _override(name: str, value) -> str:
    return f"{name}={json.dumps(value)}"  # JSON is YAML; the config loader coerces to the field's type


def _number(name: str, key: str, spec: dict, where: str) -> float:
    value = spec[key]
    if isinstance(value, str):  # YAML reads 1e-6 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name}: {key}={spec[key]!r} must be a number")
    return value


def _distribution(name: str, spec, where: str) -> BaseDistribution:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: {name} must be a mapping such as {{type: float, low: 1.0e-6, high: 1.0e-4, "
                         f"log: true}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    keys = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
            "categorical": {"type", "choices"}}
    if kind not in keys:
        raise ValueError(f"{where}: {name}: type={kind!r}; choose float, int or categorical")
    unknown = sorted(set(spec) - keys[kind])
    if unknown:
        raise ValueError(f"{where}: {name}: unknown key {unknown[0]!r} for type {kind}; "
                         f"valid: {', '.join(sorted(keys[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ValueError(f"{where}: {name}: choices must be a non-empty list of numbers, text, booleans or "
                             f"null, got {choices!r}")
        return CategoricalDistribution(choices)
    for key in ("low", "high"):
        if key not in spec:
            raise ValueError(f"{where}: {name}: type {kind} needs low and high")
    low, high = _number(name, "low", spec, where), _number(name, "high", spec, where)
    log, step = spec.get("log", False), spec.get("step")
    step = None if step is None else _number(name, "step", spec, where)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: {name}: log={log!r} must be true or false")
    if not low < high:
        raise ValueError(f"{where}: {name}: bad range low={low!r}, high={high!r}; low must be < high")
    if log and low <= 0:
        raise ValueError(f"{where}: {name}: a log scale needs low > 0, got low={low!r}")
    if log and step is not None:
        raise ValueError(f"{where}: {name}: log and step cannot be combined")
    if step is not None and not 0 < step <= high - low:
        raise ValueError(f"{where}: {name}: step={step!r} must be > 0 and at most high - low")
    if kind == "int":
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise ValueError(f"{where}: {name}: type int needs whole-number low, high and step")
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=step)


def load_space(path: str | Path, config: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Read a search space: ``{dotted option: distribution}``, each bound checked against the config.

    Example (``space.yaml``)::

        train.lr_backbone: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
        train.loss: {type: categorical, choices: [bradley_terry, focal]}
        model.lora_r: {type: int, low: 4, high: 32, step: 4}
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space file {path} does not exist")
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"search space file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"search space file {path} must map option names to distributions, e.g. "
                         "train.lr_backbone: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}")
    options = [name for name, _, _ in describe()]
    space = {}
    for name, spec in raw.items():
        if name not in options:
            close = difflib.get_close_matches(str(name), options, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"{path}: unknown option {name!r}; {hint}(`rewardlab options` lists them all)")
        dist = _distribution(name, spec, str(path))
        ends = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in ends:  # a value the config rejects (dropout 1.5, an unknown loss) fails now, not in trial 7
            try:
                load_config(config, [*overrides, _override(name, value)])
            except ValueError as err:
                raise ValueError(f"{path}: {name}={value!r} is not a valid value: {err}") from None
        space[name] = dist
    return space


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution):
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


# --------------------------------------------------------------------------- storage


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat RDBStorage has, kept as a trial system attribute."""

    def __init__(self, path: str, *, heartbeat_interval: int, grace_period: int, stale_callback=None):
        super().__init__(JournalFileBackend(path))
        self._interval, self._grace, self._stale_callback = heartbeat_interval, grace_period, stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished (or failed as stale by another worker) between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - max(t.system_attrs.get(_HEARTBEAT, 0.0), t.datetime_start.timestamp()) > self._grace]

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def open_storage(spec: str | None, out: Path, heartbeat: int = 60):
    """A storage from ``--storage``: a SQLAlchemy URL, ``journal:PATH`` / ``PATH.journal``, or the default
    ``sqlite:///<out>/study.db``. Trials of dead workers are failed after 2 heartbeats and retried."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    if spec is None:
        out.mkdir(parents=True, exist_ok=True)
        spec = f"sqlite:///{out / 'study.db'}"
    if spec.startswith("journal:") or spec.endswith((".journal", ".log")):
        path = Path(spec.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ValueError(f"--storage {spec}: folder {path.parent} does not exist (on every worker, the "
                             "journal must be one file on a shared file system)")
        return JournalHeartbeatStorage(str(path), heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                       stale_callback=retry)
    if "://" not in spec:
        raise ValueError(f"--storage {spec}: give a SQLAlchemy URL (sqlite:///study.db, "
                         "postgresql://user:password@host/db, mysql+pymysql://...) or a journal file "
                         "(journal:PATH or PATH.journal)")
    import sqlalchemy

    url = sqlalchemy.engine.make_url(spec)
    kwargs = {"pool_pre_ping": True}
    if url.get_backend_name() in ("postgresql", "mysql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(5):
            try:
                return RDBStorage(spec, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                  grace_period=2 * heartbeat, heartbeat_stale_trial_callback=retry)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:  # workers starting together race to create Optuna's tables; the loser retries
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as err:  # Optuna's message names no module; its cause does
        raise ValueError(f"cannot open study storage {url.render_as_string(hide_password=True)}: no database "
                         f"driver ({err.__cause__ or err}); install it, e.g. pip install 'psycopg[binary]' "
                         "for PostgreSQL or pymysql for MySQL") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ValueError(f"cannot open study storage {url.render_as_string(hide_password=True)}: "
                         f"{type(err).__name__}: {reason}") from None


# --------------------------------------------------------------------------- budget


def _counted(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials that use the budget: all but failed ones that were retried and surplus ones (queued ones count)."""
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return sum(1 for t in trials if not t.user_attrs.get(_SURPLUS) and not (
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
            trial.set_user_attr(_SURPLUS, True)
            trial.study.stop()
            raise optuna.TrialPruned("budget already used by other workers")
        params = {name: suggest(trial, name, dist) for name, dist in self.space.items()}
        run_dir = self.out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", _worker())
        cfg = load_config(s.config, [*self.base, *s.trial_overrides, *(_override(k, v) for k, v in params.items()),
                                     _override("train.output_dir", str(run_dir)),
                                     _override("train.save_model", s.save_models)])
        record = {"number": trial.number, "study": s.study, "worker": _worker(), "params": params}
        metric = s.metrics[0]

        def on_evaluate(step: int, metrics: dict) -> None:
            if len(s.metrics) > 1:  # Optuna prunes single-objective studies only
                return
            trial.report(float(metrics[metric]), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned(f"{metric} {metrics[metric]:.4f} at step {step}")

        try:
            result = train(cfg, on_evaluate=on_evaluate)
        except optuna.TrialPruned as pruned:
            write_atomic(run_dir / "trial.json", json.dumps({**record, "state": "pruned", "reason": str(pruned)},
                                                             indent=2))
            print(f"trial {trial.number} pruned: {pruned} ({_params_text(params)})", flush=True)
            raise
        finally:
            if not s.save_models:  # resume states hold the weights too
                shutil.rmtree(run_dir / "states", ignore_errors=True)
        values = [float(result.metrics["eval"][m]) for m in s.metrics]
        write_atomic(run_dir / "trial.json", json.dumps({**record, "state": "complete",
                                                          "values": dict(zip(s.metrics, values))}, indent=2))
        print(f"trial {trial.number} complete: " + ", ".join(f"{m} {v:.4f}" for m, v in zip(s.metrics, values))
              + f" ({_params_text(params)})", flush=True)
        return values[0] if len(values) == 1 else values


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


def run_tune(settings: TuneSettings) -> TuneResult:
    """Run this worker's share of the study, then write ``best.yaml`` and the report (and refit on request)."""
    out = Path(settings.out)
    known = trainer_metrics()
    for metric in settings.metrics:
        if metric not in known:
            raise ValueError(f"--metric {metric}: the trainer does not report it; choose from {', '.join(known)}")
    base = [_override("train.metric_for_best", settings.metrics[0]), *settings.overrides]
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
    best_cfg = load_config(settings.config, [*base, *(_override(k, v) for k, v in best.params.items()),
                                             _override("train.output_dir", str(out / "best")),
                                             _override("train.save_model", True)])
    values = ", ".join(f"{m} {v:.4f}" for m, v in zip(settings.metrics, best.values))
    best_yaml = (f"# best trial {best.number} of study {settings.study!r}: {values}\n"
                 f"# rewardlab train --config {out / 'best.yaml'}\n"
                 + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "best.yaml", best_yaml)
    report = write_report(study, out / "report", settings.metrics, best, best_yaml)
    print(f"best trial {best.number}: {values} ({_params_text(best.params)})\n"
          f"best config: {out / 'best.yaml'}\nreport: {report}", flush=True)
    result = TuneResult(study=study, best_config=out / "best.yaml", report=report)
    if settings.refit:
        print(f"refit: training best.yaml in full -> {out / 'best'}", flush=True)
        result.refit = train(load_config(out / "best.yaml"))
    return result
