"""``train(cfg)``: one model, trained as a config says: data → model → trainer → checkpoint → metrics.

:mod:`rewardlab.train.prepare` readies the data, :class:`ModelBuilder` builds the model for it,
:mod:`rewardlab.train.trainer` runs the loop, and :func:`finish` keeps the best weights and saves.
Ensembles and cross-validation folds are several such runs (:mod:`rewardlab.train.experiment`).
"""

from __future__ import annotations

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
from rewardlab.contracts.batch import ItemProcessor
from rewardlab.contracts.schema import Comparison
from rewardlab.data.collate import PreferenceCollator
from rewardlab.losses import build_pair_loss
from rewardlab.models.base import RewardNet, save_model
from rewardlab.models.debias import DebiasedRewardNet, fit_nuisance_weights
from rewardlab.models.outcomes import get_outcome_model
from rewardlab.models.personal import PersonalizedRewardNet
from rewardlab.train import checkpoint as ckpt, sharding, zero
from rewardlab.train.kernels import apply_liger
from rewardlab.train.optim import build_optimizer, build_scheduler
from rewardlab.train.penalties import build_penalties
from rewardlab.train.precision import choose_precision
from rewardlab.train.prepare import Prepared, encode_training_data, prepare_data
from rewardlab.train.trainer import Trainer

log = logging.getLogger(__name__)
_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass
class TrainResult:
    model_dir: Path  # not written when train.save_model is false
    metrics: dict

    @property
    def eval_metrics(self) -> dict:
        """Held-out metrics: a model's or an ensemble's, or their mean over cross-validation folds ({}: none)."""
        return self.metrics.get("eval") or self.metrics.get("mean") or {}


def trackers(names: list) -> list[str]:
    """``train.log_with``'s tracker names, checked: each known and its package installed."""
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


def process_group():
    """The process group (the Accelerator is made once the precision is chosen). ACCELERATE_USE_CPU is read as the
    Accelerator would: without it, CPU ranks launched with --multi_gpu never join one group."""
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > state.num_processes:
        raise ValueError(f"{launched} processes were launched but Accelerate joined {state.num_processes}: each would "
                         "train alone and overwrite the others' output. On CPU-only machines launch with "
                         "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...")
    return state


@dataclass
class ModelBuilder:
    """Builds the model a run trains, as configured, before training; built again to save a sharded model's
    gathered weights. ``fitted``: the debiasing nuisance weights, once fitted to the encoded data."""

    cfg: ExperimentConfig
    prepared: Prepared
    fitted: dict | None = None

    def __call__(self) -> RewardNet:
        cfg, prep = self.cfg, self.prepared
        built = prep.kind.build(cfg, prep.attributes, prep.processor)
        if prep.labelers is not None:
            built = PersonalizedRewardNet(built, cfg.model.personalization, prep.labelers,
                                          rank=cfg.model.personal_rank,
                                          train_pairs={u: prep.labeler_pairs.get(u, 0) for u in prep.labelers})
        if prep.outcome != built.outcome.name:
            built.set_outcome(get_outcome_model(prep.outcome))
        if cfg.train.debias and self.fitted is not None:
            built = DebiasedRewardNet(built, cfg.train.debias, self.fitted, penalized=cfg.train.debias_weight > 0)
        return built


def _debias(cfg: ExperimentConfig, builder: ModelBuilder, model: RewardNet, train_enc: list, reports: dict,
            verbose: bool) -> RewardNet:
    """train.debias: the nuisance reward starts at the length-only fit of the encoded training data."""
    if builder.prepared.labelers is not None:
        raise ValueError("train.debias with model.personalization is not supported: choose one")
    builder.fitted = fit_nuisance_weights(train_enc, cfg.train.debias, length_matched=cfg.train.length_matched)
    model = DebiasedRewardNet(model, cfg.train.debias, builder.fitted, penalized=cfg.train.debias_weight > 0)
    reports["debias"] = {"features": list(cfg.train.debias), "fitted_nuisance_weights": model.nuisance_weights()}
    if verbose:
        print(f"debias: the nuisance reward per unit of log {', '.join(cfg.train.debias)} starts at the "
              "length-only fit: " + ", ".join(f"{k} {v:+.3f}" for k, v in model.nuisance_weights().items()))
    return model


def _accelerator(cfg: ExperimentConfig, model: RewardNet, collator: PreferenceCollator, train_enc: list, state,
                 reports: dict, out: Path) -> Accelerator:
    """The Accelerator at the precision the run chooses (train.mixed_precision=auto measures it)."""
    first_batch = lambda device, n: send_to_device(collator(train_enc[: n or cfg.train.batch_size]), device)["items"]
    precision, reports["precision"] = choose_precision(cfg.train.mixed_precision, model, first_batch, state.device)
    if state.is_main_process and cfg.train.mixed_precision == "auto":
        print(f"precision: {'bf16' if precision == 'bf16' else 'fp32'} ({reports['precision']['rule']})")
    # train.compile: Accelerate compiles in prepare(); the trainer keeps the uncompiled module for saving.
    compiled = TorchDynamoPlugin(backend="inductor", dynamic=True) if cfg.train.compile else None
    acc = Accelerator(mixed_precision=precision, log_with=trackers(cfg.train.log_with) or None,
                      project_dir=str(out / "logs"), dynamo_plugin=compiled)
    zero_stage = zero.stage(acc)
    reports["distributed"] = {"type": acc.distributed_type.value, "processes": acc.num_processes,
                              **({"zero_stage": zero_stage} if zero_stage else {})}
    return acc


def _trainer(cfg: ExperimentConfig, acc: Accelerator, model: RewardNet, collator: PreferenceCollator,
             train_enc: list, eval_enc: list, out: Path, on_evaluate, reports: dict) -> Trainer:
    """Kernels and sharding on the model, then its optimiser, loss and trainer."""
    if cfg.train.liger_kernel:
        reports["liger_kernel"] = apply_liger(model, acc.device)
    if cfg.train.fsdp:  # before the optimiser: sharding replaces the parameters
        model = sharding.shard(model, acc.device, acc.num_processes)
    loss_fn = build_pair_loss(cfg.train.loss, margin_scale=cfg.train.margin_scale,
                              label_smoothing=cfg.train.label_smoothing, focal_gamma=cfg.train.focal_gamma,
                              contrastive_temperature=cfg.train.contrastive_temperature,
                              contrastive_negatives=cfg.train.contrastive_negatives)
    return Trainer(accelerator=acc, model=model, loss_fn=loss_fn,
                   optimizer=build_optimizer(model.parameter_groups(), cfg.train),
                   scheduler_factory=lambda o, n: build_scheduler(o, cfg.train, n),
                   train_data=train_enc, eval_data=eval_enc, collator=collator, cfg=cfg.train, output_dir=out,
                   on_evaluate=on_evaluate, penalties=build_penalties(cfg.train))


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
    state = process_group()
    set_seed(cfg.train.seed)
    prepared = prepare_data(cfg, data=data, labelers=labelers)
    builder = ModelBuilder(cfg, prepared)
    model, processor = builder(), prepared.item_processor(cfg)
    train_enc, eval_enc, reports = encode_training_data(cfg, processor, prepared.train, prepared.eval,
                                                        prepared.reports, verbose=state.is_main_process)
    if cfg.train.debias:
        model = _debias(cfg, builder, model, train_enc, reports, state.is_main_process)
    collator = PreferenceCollator(processor, model.head_index(), mixup_alpha=cfg.train.mixup_alpha,
                                  seed=cfg.train.seed, nuisance_to_model=getattr(model, "reads_nuisance", False))
    acc = _accelerator(cfg, model, collator, train_enc, state, reports, out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = _trainer(cfg, acc, model, collator, train_enc, eval_enc, out, on_evaluate, reports)
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    acc.init_trackers("rewardlab", config=_flat(cfg))
    if acc.is_main_process and resume_from is None:
        (out / "history.jsonl").unlink(missing_ok=True)
        (out / "config.yaml").write_text(config_text)
    run_state = trainer.train(resume_from=resume_from)
    if acc.is_main_process and resume_from is not None:  # history.jsonl = the uninterrupted run's history
        (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run_state.history))
    return finish(cfg, trainer, builder, processor, run_state, (train_enc, eval_enc), reports, config_text)


def finish(cfg: ExperimentConfig, trainer: Trainer, builder: ModelBuilder, processor: ItemProcessor, run_state,
           encoded: tuple[list, list], reports: dict, config_text: str) -> TrainResult:
    """The final model: the best weights (or the last, without eval data), with its training reward statistics,
    saved with metrics.json."""
    acc, out, (train_enc, eval_enc) = trainer.acc, Path(cfg.train.output_dir), encoded
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
    metadata = {"backbone": cfg.model.backbone, "temperature": 1.0, "reward_mean": float(aggregate.mean()),
                "reward_std": float(aggregate.std()), "train_tie_rate": float(train_pred.tie.mean()),
                "head_stats": {h: [float(train_pred.rewards[:, k].mean()), float(train_pred.rewards[:, k].std())]
                               for k, h in enumerate(raw.heads)}}
    ties = raw.outcome.ties
    metrics = {"heads": list(raw.heads), "train": train_pred.summary(raw.heads, ties)}
    if eval_enc:
        metrics["eval"] = trainer.predict(eval_enc).summary(raw.heads, ties)
    metrics.update(best_step=run_state.best_step, steps=run_state.step, data=reports, **trainer.throughput)
    model_dir = out / "model"
    if (trainer.sharded or trainer.zero) and cfg.train.save_model:  # gathered on every process; saved from a whole copy
        weights = zero.full_state_dict(raw) if trainer.zero else sharding.full(raw.state_dict())
        if acc.is_main_process:
            with zero.whole_models():
                raw = builder()
            raw.load_state_dict(weights)
    if acc.is_main_process:
        if cfg.train.save_model:
            save_model(raw, processor, model_dir, metadata, kind=builder.prepared.kind.name,
                       extra_files={"rewardlab.yaml": config_text})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    acc.wait_for_everyone()
    for tracker in acc.trackers:  # Accelerator.end_training would also destroy the process group: the program's
        tracker.finish()  # to keep (cross-validation and ensembles train on it again) and to end (the CLI does)
    return TrainResult(model_dir=model_dir, metrics=metrics)
