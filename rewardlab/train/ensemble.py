"""Train an ensemble: ``train.ensemble_size`` members of one kind, then save them as one checkpoint.

Members differ in their seed (initialisation, shuffling, dropout) and, with
``train.ensemble_bootstrap``, in their training data: each draws its own resample
of the training comparisons with replacement. All members are evaluated on the same
held-out comparisons, and so is their mean.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from rewardlab.config import ExperimentConfig
from rewardlab.models.base import get_kind, save_model
from rewardlab.models.ensemble import EnsembleRewardNet
from rewardlab.scoring import RewardModel
from rewardlab.train.run import TrainResult, load_training_data, train


def train_ensemble(cfg: ExperimentConfig) -> TrainResult:
    """Train the members under ``<output_dir>/member-<k>``; the ensemble goes to ``<output_dir>/model``."""
    k_members = cfg.train.ensemble_size
    if k_members < 2:
        raise ValueError(f"train.ensemble_size={k_members}: an ensemble needs at least 2 members")
    if cfg.model.personalization != "none" or cfg.data.folds > 1:
        raise ValueError("train.ensemble_size > 1 cannot be combined with model.personalization or data.folds yet")
    if get_kind(cfg.model.kind).prepare is not None:
        raise ValueError(f"train.ensemble_size > 1: model.kind={cfg.model.kind} judges ordered pairs; ensembles of "
                         "pairwise kinds are not supported yet")
    out = Path(cfg.train.output_dir)
    processor = get_kind(cfg.model.kind).processor(cfg)
    train_comps, eval_comps, _ = load_training_data(cfg, processor)
    members, metrics = [], {"members": []}
    for k in range(k_members):
        seed = cfg.train.seed + k
        data = train_comps
        if cfg.train.ensemble_bootstrap:
            picks = np.random.default_rng(seed).integers(0, len(train_comps), len(train_comps))
            data = [train_comps[i] for i in picks]
        member_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, seed=seed, ensemble_size=1, save_model=True, output_dir=str(out / f"member-{k}")))
        result = train(member_cfg, data=(data, eval_comps))
        metrics["members"].append(result.metrics.get("eval", result.metrics["train"]))
        members.append(RewardModel.from_pretrained(str(result.model_dir), device="cpu"))
    first = members[0]
    ensemble = EnsembleRewardNet([m.model for m in members], first.kind.name)
    keep = {k: v for k, v in first.metadata.items() if k not in ("kind", "heads", "outcome")}
    model_dir = out / "model"
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    save_model(ensemble, first.processor, model_dir, {**keep, "ensemble_bootstrap": cfg.train.ensemble_bootstrap},
               kind="ensemble", extra_files={"rewardlab.yaml": config_text})
    for k in range(k_members):  # the members now live inside the ensemble folder
        shutil.rmtree(out / f"member-{k}" / "model", ignore_errors=True)
    if eval_comps:
        from rewardlab.evaluation.ensemble import ensemble_breakdown

        metrics["eval"] = ensemble_breakdown(RewardModel.from_pretrained(str(model_dir), device="cpu"), eval_comps)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainResult(model_dir=model_dir, metrics=metrics)
