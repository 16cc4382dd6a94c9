"""Hyperparameter search with Optuna: one study, shared by any number of workers.

Every worker runs the same command; they meet in one study through its storage (a
SQLite file by default, Optuna's journal file for processes sharing a file system,
any SQLAlchemy URL for many machines). ``--trials N`` is the study's budget, not one
worker's: trials are counted in the storage, so N trials run once between all workers.

A trial is ``run_experiment(cfg)`` with sampled options; the trainer reports each validation
evaluation to the trial, which a pruner may stop. A worker that dies leaves a trial
whose heartbeat goes stale; the next trial any worker starts marks it failed and
queues a retry with the same parameters.

Modules: ``settings`` (the options, no Optuna: the CLI builds its flags from them), ``space`` (search
spaces), ``storage`` (where the study lives), ``search`` (trials and the study), ``report`` (plots, page).
Importing this package does not import Optuna; the names below load their module on first use.
"""

from __future__ import annotations

from rewardlab.tune.settings import PRUNERS, TuneSettings

_LAZY = {"run_tune": "search", "TuneResult": "search", "load_space": "space", "suggest": "space",
         "direction": "space", "trainer_metrics": "space", "open_storage": "storage",
         "JournalHeartbeatStorage": "storage"}

__all__ = ["PRUNERS", "JournalHeartbeatStorage", "TuneResult", "TuneSettings", "direction", "load_space",
           "open_storage", "run_tune", "suggest", "trainer_metrics"]


def __getattr__(name: str):
    # Optuna (and SQLAlchemy, matplotlib) only when the search itself is used, not for `rewardlab --help`.
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
