"""``train(cfg)``: data → model → trainer → checkpoint → metrics, in that order."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import TorchDynamoPlugin, parse_flag_from_env, send_to_device, set_seed

from rewardlab.config import ExperimentConfig
from rewardlab.data.balance import balance_pairs
from rewardlab.data.collate import ItemProcessor, PreferenceCollator, encode_comparisons
from rewardlab.data.load import load_comparisons
from rewardlab.data.schema import Comparison
from rewardlab.data.splits import split_by_group, stratified_group_split
from rewardlab.losses import build_pair_loss, outcome_model_for
from rewardlab.models.base import ModelKind, RewardNet, get_kind, save_model
from rewardlab.models.debias import DebiasedRewardNet, fit_nuisance_weights
from rewardlab.models.outcomes import get_outcome_model
from rewardlab.models.personal import (PersonalItems, PersonalizedRewardNet, add_labeler_tokens, labeler_table,
                                       personalize)
from rewardlab.train import checkpoint as ckpt
from rewardlab.train import sharding, zero
from rewardlab.train.kernels import apply_liger
from rewardlab.train.optim import build_optimizer, build_scheduler
from rewardlab.train.penalties import build_penalties
from rewardlab.train.precision import choose_precision
from rewardlab.train.trainer import Trainer

log = logging.getLogger(__name__)
_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass
class TrainResult:
    model_dir: Path  # not written when train.save_model is false
    metrics: dict


def _trackers(names: list) -> list[str]:
    out = []
    for name in names:
        if name not in _TRACKER_PACKAGES:
            raise ValueError(f"train.log_with: unknown tracker {name!r}; choose from {', '.join(_TRACKER_PACKAGES)}")
        if importlib.util.find_spec(_TRACKER_PACKAGES[name]) is None:
            log.warning("tracker %s is not installed; not logging to it", name)
        else:
            out.append(name)
    return out


def _flat(cfg: ExperimentConfig) -> dict:
    return {f"{section}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
            for section, values in cfg.to_dict().items() for k, v in values.items()}


def load_training_data(cfg: ExperimentConfig, processor: ItemProcessor):
    """(train, eval) comparisons and the load reports of each source."""
    render = processor.render_chat
    train, train_report = load_comparisons(cfg.data.train, cfg.data, render_chat=render)
    reports = {"train_source": train_report.__dict__}
    if cfg.data.eval:
        evaluation, eval_report = load_comparisons(cfg.data.eval, cfg.data, render_chat=render)
        reports["eval_source"] = eval_report.__dict__
    else:
        split = stratified_group_split if cfg.data.stratify else split_by_group
        train, evaluation = split(train, cfg.data.eval_fraction, split_by=cfg.data.split_by, seed=cfg.data.seed)
    if not train:
        raise ValueError(f"no training data left after holding out data.eval_fraction={cfg.data.eval_fraction} "
                         f"of {cfg.data.train}; lower it or give data.eval")
    return train, evaluation, reports


def attributes_of(comparisons: list[Comparison], cfg: ExperimentConfig) -> list[str]:
    """The rating dimensions the data judges, in ``data.attributes`` order (else sorted); empty: one reward."""
    found = {p.attribute for c in comparisons for p in c.pairs if p.attribute is not None}
    order = [a for a in cfg.data.attributes if a in found]
    return order + sorted(found - set(order))


def outcome_of(kind: ModelKind, loss: str) -> str:
    """The outcome model a run trains: the kind's own (pairwise kinds), else the loss's; they must agree."""
    wanted = outcome_model_for(loss)
    if kind.outcome is not None and wanted != kind.outcome:
        raise ValueError(f"model.kind={kind.name} predicts outcomes with {kind.outcome}: set train.loss={kind.outcome} "
                         f"(got {loss!r})")
    if kind.outcome is None and wanted == "three_class":
        raise ValueError(f"train.loss=three_class needs a pairwise model kind (e.g. model.kind=cross_encoder), whose items "
                         f"are ordered pairs; model.kind={kind.name} scores single responses: use rao_kupper or "
                         "davidson for ties")
    return wanted


def labelers_of(cfg: ExperimentConfig, train_comps: list[Comparison], eval_comps: list[Comparison],
                reports: dict, labelers: Sequence[str] | None = None) -> list[str]:
    """The labelers that get parameters of their own (>= model.min_labeler_pairs training pairs, unless
    ``labelers`` fixes the table); reports coverage."""
    found, counts = labeler_table(train_comps, cfg.model.min_labeler_pairs)
    labelers = found if labelers is None else list(labelers)
    if not labelers:
        raise ValueError(f"model.personalization={cfg.model.personalization}: no labeler has "
                         f"model.min_labeler_pairs={cfg.model.min_labeler_pairs} training pairs"
                         + ("" if counts else " (the data has no labeler column; map yours with data.columns)"))
    known = set(labelers)
    eval_labelers = {c.labeler for c in eval_comps if c.labeler is not None}
    reports["labelers"] = {
        "mode": cfg.model.personalization, "personal": len(labelers), "population_only": len(set(counts) - known),
        "train_pairs_personal": sum(n for u, n in counts.items() if u in known),
        "train_pairs_population": sum(len(c.pairs) for c in train_comps if c.labeler not in known),
        "eval_labelers_known": len(eval_labelers & known), "eval_labelers_unknown": len(eval_labelers - known)}
    return labelers


def encode_training_data(cfg: ExperimentConfig, processor: ItemProcessor, train_comps: list[Comparison],
                         eval_comps: list[Comparison], reports: dict, *, verbose: bool = True):
    """Encode the loaded data; returns (train, eval) encoded comparisons and the data report."""
    train_comps = balance_pairs(train_comps, cfg.train.balance)
    train_enc, train_trunc = encode_comparisons(train_comps, processor)
    eval_enc, eval_trunc = encode_comparisons(eval_comps, processor)
    reports.update(train_comparisons=len(train_comps), eval_comparisons=len(eval_comps),
                   train_pairs=sum(len(c.pairs) for c in train_comps),
                   eval_pairs=sum(len(c.pairs) for c in eval_comps),
                   truncated_sequences={"train": train_trunc, "eval": eval_trunc, "max_length": cfg.data.max_length})
    if verbose:
        print(f"data: {reports['train_pairs']} train pairs / {reports['eval_pairs']} eval pairs; "
              f"truncated sequences: {train_trunc} train, {eval_trunc} eval (max_length={cfg.data.max_length})")
        for key in ("train_source", "eval_source"):
            if key in reports and reports[key].get("skipped"):
                print(f"warning: skipped {reports[key]['skipped']} bad rows in {reports[key]['source']}: "
                      + " | ".join(reports[key]["reasons"]))
    return train_enc, eval_enc, reports


def cross_validate(cfg: ExperimentConfig) -> dict:
    """``data.folds``-fold cross-validation: one model (or, with ``train.ensemble_size``, one ensemble) per fold
    under ``<output_dir>/fold-<k>``, each evaluated on its held-out fold (groups by ``data.split_by`` never
    straddle; outcome-stratified with ``data.stratify``).

    Returns (and writes to ``<output_dir>/cv_metrics.json``) each fold's eval metrics and, per metric,
    the mean and standard deviation over folds.
    """
    from rewardlab.data.splits import kfold_splits
    from rewardlab.evaluation.summary import fold_summary

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
        if cfg.train.ensemble_size > 1:  # an ensemble per fold, scored as one (its members' mean)
            from rewardlab.train.ensemble import train_ensemble

            per_fold.append(train_ensemble(fold_cfg, data=split).metrics["eval"])
        else:
            per_fold.append(train(fold_cfg, data=split).metrics["eval"])
    summary = {"folds": cfg.data.folds, "per_fold": per_fold, "source": report.__dict__, **fold_summary(per_fold)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def train(cfg: ExperimentConfig, *, resume: bool = False, on_evaluate: Callable[[int, dict], None] | None = None,
          data: tuple[list[Comparison], list[Comparison]] | None = None,
          labelers: Sequence[str] | None = None) -> TrainResult:
    """Train a reward model as ``cfg`` says; returns where the model went and its metrics.

    ``on_evaluate(step, metrics)`` is called after each evaluation (e.g. to report to an
    Optuna trial); an exception it raises stops training and propagates. ``data`` gives the
    (train, eval) comparisons directly instead of reading ``cfg.data`` (cross-validation folds);
    ``labelers`` fixes a personalised model's labeler table (ensemble members share one).
    Under ``accelerate launch`` the process group stays up for what follows; a program that
    trains on it ends it (``torch.distributed.destroy_process_group()``), as the CLI does.
    """
    out = Path(cfg.train.output_dir)
    resume_from = ckpt.latest_state(out / "states") if resume else None
    if resume and resume_from is None:
        raise ValueError(f"--resume: no saved state under {out / 'states'}; nothing to resume")
    # The process group; the Accelerator is made once the precision is chosen. Read ACCELERATE_USE_CPU as the
    # Accelerator would: without it, CPU ranks launched with --multi_gpu never join one group.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > state.num_processes:
        raise ValueError(f"{launched} processes were launched but Accelerate joined {state.num_processes}: each would "
                         "train alone and overwrite the others' output. On CPU-only machines launch with "
                         "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...")
    set_seed(cfg.train.seed)
    kind = get_kind(cfg.model.kind)
    outcome = outcome_of(kind, cfg.train.loss)
    processor = kind.processor(cfg)
    if data is None:
        train_comps, eval_comps, reports = load_training_data(cfg, processor)
    else:
        (train_comps, eval_comps), reports = data, {"train_source": {"source": cfg.data.train, "folds": cfg.data.folds}}
    length_options = [name for name, on in (("train.debias", cfg.train.debias), ("train.length_penalty",
                                             cfg.train.length_penalty > 0), ("train.length_matched",
                                             cfg.train.length_matched)) if on]
    if kind.prepare is not None and length_options:
        raise ValueError(f"{length_options[0]} reads each response's length, and model.kind={kind.name} scores two "
                         "responses at once: use it with a kind that scores each response (text, multimodal)")
    if kind.prepare is not None:
        train_comps, eval_comps = [kind.prepare(c) for c in train_comps], [kind.prepare(c) for c in eval_comps]
    personal = None
    if cfg.model.personalization != "none":
        personal = labelers_of(cfg, train_comps, eval_comps, reports, labelers)
        index = {u: i for i, u in enumerate(personal)}
        train_comps = [personalize(c, index) for c in train_comps]
        eval_comps = [personalize(c, index) for c in eval_comps]
    attributes = attributes_of(train_comps, cfg)
    unseen = sorted({p.attribute for c in eval_comps for p in c.pairs} - {None, *attributes})
    if unseen:
        raise ValueError(f"the evaluation data rates attribute {unseen[0]!r}, which no training pair rates; "
                         f"the model's heads: {', '.join(attributes) or 'one reward'}")
    token_ids = add_labeler_tokens(processor.tokenizer, personal) if cfg.model.personalization == "tokens" else []
    base_processor, counts = processor, labeler_table(train_comps, 1)[1] if personal is not None else {}
    fitted = None  # the debiasing nuisance weights, once fitted to the encoded data

    def make_model() -> RewardNet:
        """The model as configured, before training (built again to save a sharded model's gathered weights)."""
        built = kind.build(cfg, attributes, base_processor)
        if personal is not None:
            built = PersonalizedRewardNet(built, cfg.model.personalization, personal, rank=cfg.model.personal_rank,
                                          train_pairs={u: counts.get(u, 0) for u in personal})
        if outcome != built.outcome.name:
            built.set_outcome(get_outcome_model(outcome))
        if cfg.train.debias and fitted is not None:
            built = DebiasedRewardNet(built, cfg.train.debias, fitted, penalized=cfg.train.debias_weight > 0)
        return built

    model = make_model()
    if personal is not None:
        processor = PersonalItems(processor, cfg.model.personalization, token_ids, dropout=cfg.model.labeler_dropout,
                                  seed=cfg.train.seed)
    train_enc, eval_enc, reports = encode_training_data(cfg, processor, train_comps, eval_comps, reports,
                                                        verbose=state.is_main_process)
    if cfg.train.debias:
        if personal is not None:
            raise ValueError("train.debias with model.personalization is not supported: choose one")
        fitted = fit_nuisance_weights(train_enc, cfg.train.debias, length_matched=cfg.train.length_matched)
        model = DebiasedRewardNet(model, cfg.train.debias, fitted, penalized=cfg.train.debias_weight > 0)
        reports["debias"] = {"features": list(cfg.train.debias), "fitted_nuisance_weights": model.nuisance_weights()}
        if state.is_main_process:
            print(f"debias: the nuisance reward per unit of log {', '.join(cfg.train.debias)} starts at the "
                  "length-only fit: "
                  + ", ".join(f"{k} {v:+.3f}" for k, v in model.nuisance_weights().items()))
    collator = PreferenceCollator(processor, model.head_index(), mixup_alpha=cfg.train.mixup_alpha,
                                  seed=cfg.train.seed, nuisance_to_model=getattr(model, "reads_nuisance", False))
    first_batch = lambda device: send_to_device(collator(train_enc[: cfg.train.batch_size]), device)["items"]
    precision, reports["precision"] = choose_precision(cfg.train.mixed_precision, model, first_batch, state.device)
    if state.is_main_process and cfg.train.mixed_precision == "auto":
        print(f"precision: {'bf16' if precision == 'bf16' else 'fp32'} ({reports['precision']['rule']})")
    # train.compile: Accelerate compiles in prepare(); the trainer keeps the uncompiled module for saving.
    compiled = TorchDynamoPlugin(backend="inductor", dynamic=True) if cfg.train.compile else None
    acc = Accelerator(mixed_precision=precision, log_with=_trackers(cfg.train.log_with) or None,
                      project_dir=str(out / "logs"), dynamo_plugin=compiled)
    out.mkdir(parents=True, exist_ok=True)
    zero_stage = zero.stage(acc)
    reports["distributed"] = {"type": acc.distributed_type.value, "processes": acc.num_processes,
                              **({"zero_stage": zero_stage} if zero_stage else {})}
    if cfg.train.liger_kernel:
        reports["liger_kernel"] = apply_liger(model, acc.device)
    if cfg.train.fsdp:  # before the optimiser: sharding replaces the parameters
        model = sharding.shard(model, acc.device, acc.num_processes)
    optimizer = build_optimizer(model.parameter_groups(), cfg.train)
    metadata = {"backbone": cfg.model.backbone, "temperature": 1.0}
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    loss_fn = build_pair_loss(cfg.train.loss, margin_scale=cfg.train.margin_scale,
                              label_smoothing=cfg.train.label_smoothing, focal_gamma=cfg.train.focal_gamma,
                              contrastive_temperature=cfg.train.contrastive_temperature,
                              contrastive_negatives=cfg.train.contrastive_negatives)
    trainer = Trainer(accelerator=acc, model=model, loss_fn=loss_fn,
                      optimizer=optimizer, scheduler_factory=lambda o, n: build_scheduler(o, cfg.train, n),
                      train_data=train_enc, eval_data=eval_enc,
                      collator=collator, cfg=cfg.train, output_dir=out,
                      on_evaluate=on_evaluate, penalties=build_penalties(cfg.train))
    acc.init_trackers("rewardlab", config=_flat(cfg))
    if acc.is_main_process and resume_from is None:
        (out / "history.jsonl").unlink(missing_ok=True)
        (out / "config.yaml").write_text(config_text)
    state = trainer.train(resume_from=resume_from)
    if acc.is_main_process and resume_from is not None:  # history.jsonl = the uninterrupted run's history
        (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state.history))

    # Final model: the best weights (or the last, without eval data), with train reward statistics.
    raw: RewardNet = trainer.raw_model
    best = trainer.best_weights or (trainer.ema.shadow if trainer.ema else {})
    params = dict(raw.named_parameters())
    if trainer.zero:
        zero.load_weights(params, best)
    else:
        with torch.no_grad():
            for name, value in best.items():
                params[name].copy_(value)
    train_pred = trainer.predict(train_enc)
    aggregate = train_pred.rewards[:, -1]
    metadata.update(reward_mean=float(aggregate.mean()), reward_std=float(aggregate.std()),
                    head_stats={h: [float(train_pred.rewards[:, k].mean()), float(train_pred.rewards[:, k].std())]
                                for k, h in enumerate(raw.heads)})
    ties = raw.outcome.ties
    metrics = {"heads": list(raw.heads), "train": train_pred.summary(raw.heads, ties)}
    if eval_enc:
        metrics["eval"] = trainer.predict(eval_enc).summary(raw.heads, ties)
    metrics.update(best_step=state.best_step, steps=state.step, data=reports, **trainer.throughput)
    model_dir = out / "model"
    if (trainer.sharded or trainer.zero) and cfg.train.save_model:  # gathered on every process; saved from a whole copy
        weights = zero.full_state_dict(raw) if trainer.zero else sharding.full(raw.state_dict())
        if acc.is_main_process:
            with zero.whole_models():
                raw = make_model()
            raw.load_state_dict(weights)
    if acc.is_main_process:
        if cfg.train.save_model:
            save_model(raw, processor, model_dir, metadata, kind=kind.name,
                       extra_files={"rewardlab.yaml": config_text})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # Accelerator.end_training would also destroy the process group: the program's
        tracker.finish()  # to keep (cross-validation and ensembles train on it again) and to end (the CLI does)
    return TrainResult(model_dir=model_dir, metrics=metrics)
