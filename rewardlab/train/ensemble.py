"""Train an ensemble: ``train.ensemble_size`` members of one kind, then save them as one checkpoint.

Separate members differ in their seed (initialisation, shuffling, dropout) and, with
``train.ensemble_bootstrap``, in their training data: each draws its own resample
of the training comparisons with replacement. All members are evaluated on the same
held-out comparisons, and so is their mean.

With ``train.ensemble_shared_backbone`` the members are heads of one model instead: every
training pair is judged once per member head (``member-00`` …, weighted by a Poisson(1)
draw per head with ``train.ensemble_bootstrap``: the online bootstrap), the aggregate
column is their mean, and held-out pairs are judged on that mean. One training run,
one forward pass per batch for all members.

Personalised members share one labeler table, drawn from all the training comparisons
(not from a member's resample), so one processor encodes every member's items.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from rewardlab.config import ExperimentConfig
from rewardlab.contracts.schema import Comparison
from rewardlab.models.base import CONFIG_KEY, get_kind, save_model
from rewardlab.models.ensemble import EnsembleRewardNet, member_pairs
from rewardlab.models.personal import labeler_table
from rewardlab.scoring import RewardModel
from rewardlab.train.prepare import labelers_of, load_training_data
from rewardlab.train.run import TrainResult, train


def train_ensemble(cfg: ExperimentConfig, *, data: tuple[list[Comparison], list[Comparison]] | None = None
                   ) -> TrainResult:
    """Train the members under ``<output_dir>/member-<k>``; the ensemble goes to ``<output_dir>/model``.

    ``data`` gives the (train, eval) comparisons instead of reading ``cfg.data`` (a cross-validation fold).
    """
    k_members = cfg.train.ensemble_size
    if k_members < 2:
        raise ValueError(f"train.ensemble_size={k_members}: an ensemble needs at least 2 members")
    if not get_kind(cfg.model.kind).member_heads and cfg.train.ensemble_shared_backbone:
        raise ValueError(f"train.ensemble_shared_backbone: model.kind={cfg.model.kind} has no heads to give each "
                         "member one (it reads its verdict from the language model's own token logits); train "
                         "separate members (train.ensemble_shared_backbone=false)")
    out = Path(cfg.train.output_dir)
    if data is None:
        data = load_training_data(cfg, get_kind(cfg.model.kind).processor(cfg))[:2]
    train_comps, eval_comps = data
    personal = _personal_table(cfg, train_comps, eval_comps)
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)  # kept as config.yaml, as a single run keeps it
    if cfg.train.ensemble_shared_backbone:
        return _train_shared(cfg, train_comps, eval_comps, personal, config_text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_text)
    members, metrics = [], {"members": []}
    for k in range(k_members):
        seed = cfg.train.seed + k
        data = train_comps
        if cfg.train.ensemble_bootstrap:
            picks = np.random.default_rng(seed).integers(0, len(train_comps), len(train_comps))
            data = [train_comps[i] for i in picks]
        member_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, seed=seed, ensemble_size=1, save_model=True, output_dir=str(out / f"member-{k}")))
        result = train(member_cfg, data=(data, eval_comps), labelers=personal.get("labelers"))
        metrics["members"].append(result.metrics.get("eval", result.metrics["train"]))
        members.append(RewardModel.from_pretrained(str(result.model_dir), device="cpu"))
    first = members[0]
    ensemble = EnsembleRewardNet([m.model for m in members], first.kind.name)
    keep = {k: v for k, v in first.metadata.items() if k not in ("kind", "heads", "outcome")}
    if personal:
        keep["personalization"] = {**keep["personalization"], **personal}
    model_dir = out / "model"
    save_model(ensemble, first.processor, model_dir, {**keep, "ensemble_bootstrap": cfg.train.ensemble_bootstrap},
               kind="ensemble", extra_files={"rewardlab.yaml": config_text})
    for k in range(k_members):  # the members now live inside the ensemble folder
        shutil.rmtree(out / f"member-{k}" / "model", ignore_errors=True)
    if eval_comps:
        from rewardlab.evaluation.ensemble import ensemble_breakdown

        metrics["eval"] = ensemble_breakdown(RewardModel.from_pretrained(str(model_dir), device="cpu"), eval_comps)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainResult(model_dir=model_dir, metrics=metrics)


def _personal_table(cfg: ExperimentConfig, train_comps: list[Comparison], eval_comps: list[Comparison]) -> dict:
    """For personalised members: one labeler table from all the training data (a bootstrap resample or a
    member head's copies would count differently) and each labeler's training pairs; {} otherwise."""
    if cfg.model.personalization == "none":
        return {}
    labelers = labelers_of(cfg, train_comps, eval_comps, {})
    counts = labeler_table(train_comps, 1)[1]
    return {"labelers": labelers, "train_pairs": {u: counts.get(u, 0) for u in labelers}}


def _train_shared(cfg: ExperimentConfig, train_comps: list[Comparison], eval_comps: list[Comparison],
                  personal: dict, config_text: str) -> TrainResult:
    k_members = cfg.train.ensemble_size
    data = member_pairs(train_comps, k_members, bootstrap=cfg.train.ensemble_bootstrap, seed=cfg.train.seed)
    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ensemble_size=1, save_model=True))
    result = train(one, data=(data, eval_comps), labelers=personal.get("labelers"))
    (Path(cfg.train.output_dir) / "config.yaml").write_text(config_text)  # the ensemble's, not its one-run view
    config = result.model_dir / "config.json"  # mark the multi-head folder as an ensemble of its member heads
    content = json.loads(config.read_text())
    content[CONFIG_KEY].update(ensemble_heads=k_members, ensemble_bootstrap=cfg.train.ensemble_bootstrap)
    if personal:  # pairs per labeler as in the data, not as the K member copies counted them
        content[CONFIG_KEY]["personalization"].update(personal)
    partial = config.with_suffix(".json.tmp")
    partial.write_text(json.dumps(content, indent=2))
    partial.replace(config)
    metrics = {"shared_backbone": True, "training": result.metrics}
    if eval_comps:
        from rewardlab.evaluation.ensemble import ensemble_breakdown

        metrics["eval"] = ensemble_breakdown(RewardModel.from_pretrained(str(result.model_dir), device="cpu"),
                                             eval_comps)
    (Path(cfg.train.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainResult(model_dir=result.model_dir, metrics=metrics)
