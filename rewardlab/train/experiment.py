"""What one ``rewardlab train`` makes, as the config says: one model, an ensemble, or one per cross-validation fold.

The CLI, the tuner and the demos all train through :func:`run_experiment`, so each shape is
chosen in one place.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from rewardlab.config import ExperimentConfig
from rewardlab.contracts.schema import Comparison
from rewardlab.data.load import load_comparisons
from rewardlab.data.splits import kfold_splits
from rewardlab.evaluation.summary import fold_summary
from rewardlab.models.base import get_kind
from rewardlab.train.ensemble import train_ensemble
from rewardlab.train.run import TrainResult, train
from rewardlab.train.steps import train_steps, trains_steps


def run_experiment(cfg: ExperimentConfig, *, resume: bool = False,
                   on_evaluate: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Cross-validation with ``data.folds`` > 1 (``metrics``: the summary written to cv_metrics.json, ``model_dir``:
    the run's folder), else an ensemble with ``train.ensemble_size`` > 1, else one model. ``resume`` and
    ``on_evaluate`` apply to a single model's run (see :func:`rewardlab.train.run.train`)."""
    if trains_steps(cfg):  # stepwise data: a process reward model (rewardlab.train.steps)
        return train_steps(cfg, resume=resume, on_evaluate=on_evaluate)
    if cfg.data.folds > 1:
        return TrainResult(model_dir=Path(cfg.train.output_dir), metrics=cross_validate(cfg))
    if cfg.train.ensemble_size > 1:
        return train_ensemble(cfg)
    return train(cfg, resume=resume, on_evaluate=on_evaluate)


def _train_one(cfg: ExperimentConfig, data: tuple[list[Comparison], list[Comparison]]) -> TrainResult:
    return train_ensemble(cfg, data=data) if cfg.train.ensemble_size > 1 else train(cfg, data=data)


def cross_validate(cfg: ExperimentConfig) -> dict:
    """``data.folds``-fold cross-validation: one model (or, with ``train.ensemble_size``, one ensemble) per fold
    under ``<output_dir>/fold-<k>``, each evaluated on its held-out fold (groups by ``data.split_by`` never
    straddle; outcome-stratified with ``data.stratify``).

    Returns (and writes to ``<output_dir>/cv_metrics.json``) each fold's eval metrics and, per metric,
    the mean and standard deviation over folds.
    """
    if cfg.data.eval:
        raise ValueError("data.folds > 1 splits data.train into folds itself: leave data.eval unset")
    processor = get_kind(cfg.model.kind).processor(cfg)
    comparisons, report = load_comparisons(cfg.data.train, cfg.data, render_chat=processor.render_chat)
    folds = kfold_splits(comparisons, cfg.data.folds, split_by=cfg.data.split_by, stratify=cfg.data.stratify,
                         seed=cfg.data.seed)
    out = Path(cfg.train.output_dir)
    per_fold = []
    for k, split in enumerate(folds):
        fold_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(out / f"fold-{k}")))
        # an ensemble per fold with train.ensemble_size, scored as one (its members' mean)
        per_fold.append(_train_one(fold_cfg, data=split).metrics["eval"])
    summary = {"folds": cfg.data.folds, "per_fold": per_fold, "source": report.__dict__, **fold_summary(per_fold)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
