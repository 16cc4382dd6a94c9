"""Training a process reward model: stepwise data → per-step loss → a saved ``prm`` checkpoint with metrics.json.

:func:`trains_steps` is the one place a run is told to be stepwise (the data is stepwise, or ``model.kind=prm``);
:func:`train_steps` then runs the same set-up as the pairwise run (:mod:`rewardlab.train.run`: Accelerate,
precision, AdamW with its schedule, atomic saving) around a small loop of its own, since a batch here is
solutions with step labels rather than judged pairs: the model reads every step (``model(**items,
steps=True)`` -> (S,) logits) and the :class:`~rewardlab.losses.StepLoss` weighs them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed

from rewardlab.config import ExperimentConfig
from rewardlab.contracts.steps import Solution
from rewardlab.data.collate import LengthGroupedBatchSampler
from rewardlab.data.encode import padded_width
from rewardlab.data.sampling import TokenBudgetBatchSampler
from rewardlab.data.stepwise import is_stepwise, load_solutions, split_solutions
from rewardlab.losses import StepLoss, class_weights, get_loss, is_step_loss
from rewardlab.metrics.pairwise import is_improvement
from rewardlab.models.base import get_kind, save_model
from rewardlab.models.prm import PRM_KIND, ProcessRewardNet, StepItem, StepItems
from rewardlab.train.optim import build_optimizer, build_scheduler
from rewardlab.train.precision import choose_precision
from rewardlab.train.results import peak_rss_mb
from rewardlab.train.run import TrainResult, process_group, trackers

PAIRWISE_DEFAULT, STEP_DEFAULT = "bradley_terry", "step_bce"  # train.loss's default stands for step_bce here
METRIC_NAMES = {"accuracy": "step_accuracy", "log_loss": "step_log_loss"}  # train.metric_for_best, read per step


@dataclass(frozen=True)
class EncodedSolution:
    """A solution's token ids and step ends, with the labels of the steps it kept."""

    item: StepItem
    labels: tuple[bool, ...]

    @property
    def length(self) -> int:
        return len(self.item[0])


def trains_steps(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg`` trains a process reward model: ``model.kind=prm``, or stepwise data (which only that kind
    trains on); a per-step loss with comparisons is an error here, before anything loads."""
    if cfg.model.kind == PRM_KIND.name or is_stepwise(cfg.data):
        return True
    if is_step_loss(cfg.train.loss):
        raise ValueError(f"train.loss={cfg.train.loss} is a per-step loss: it trains process reward models on "
                         "stepwise data; data.train holds comparisons (use a pairwise loss)")
    return False


def step_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as a process reward model trains: ``model.kind=prm`` (in place of the default text), a per-step loss
    (in place of the pairwise default); what a PRM run cannot do is an error naming the option."""
    kind, loss = cfg.model.kind, cfg.train.loss
    if kind not in ("text", PRM_KIND.name):
        raise ValueError(f"stepwise data trains a process reward model (model.kind=prm); model.kind={kind} "
                         f"({get_kind(kind).help.split(';')[0]}) trains on comparisons")
    if not is_step_loss(loss) and loss != PAIRWISE_DEFAULT:
        raise ValueError(f"train.loss={loss} is a pairwise loss; a process reward model trains with a per-step loss: "
                         "step_bce, step_bce_prefix or step_bce_last")
    unsupported = [name for name, on in (
        ("data.folds", cfg.data.folds > 1), ("train.ensemble_size", cfg.train.ensemble_size > 1),
        ("model.personalization", cfg.model.personalization != "none"), ("train.debias", bool(cfg.train.debias)),
        ("train.length_matched", cfg.train.length_matched),
        ("train.fsdp", cfg.train.fsdp), ("train.mixup_alpha", cfg.train.mixup_alpha > 0),
        ("train.ema_decay", cfg.train.ema_decay > 0)) if on]
    if unsupported:
        raise ValueError(f"{unsupported[0]} is not supported for process reward models (model.kind=prm) yet")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind=PRM_KIND.name),
                               train=dataclasses.replace(cfg.train, loss=loss if is_step_loss(loss) else STEP_DEFAULT))


def load_step_data(cfg: ExperimentConfig) -> tuple[list[Solution], list[Solution], dict]:
    """(train, eval) solutions: ``data.eval``, else a split of ``data.train`` by ``data.split_by``; and the reports."""
    train, report = load_solutions(cfg.data.train, cfg.data)
    reports = {"train_source": report.__dict__}
    if cfg.data.eval:
        evaluation, eval_report = load_solutions(cfg.data.eval, cfg.data)
        reports["eval_source"] = eval_report.__dict__
    else:
        train, evaluation = split_solutions(train, cfg.data.eval_fraction, split_by=cfg.data.split_by,
                                            seed=cfg.data.seed)
    if not train:
        raise ValueError(f"no training solutions left after holding out data.eval_fraction={cfg.data.eval_fraction}")
    return train, evaluation, reports


def encode_steps(solutions: Sequence[Solution], processor: StepItems) -> tuple[list[EncodedSolution], dict]:
    """Encode solutions; a long one keeps the steps that fit (their labels with them), and the report counts the
    solutions cut and the steps left out, so no step leaves the loss unnoticed."""
    items, kept = processor.encode_solutions([s.prompt for s in solutions], [s.steps for s in solutions])
    encoded = [EncodedSolution(item, s.labels[:k]) for item, s, k in zip(items, solutions, kept)]
    dropped = [len(s.steps) - k for s, k in zip(solutions, kept)]
    return encoded, {"solutions": len(solutions), "steps": sum(map(len, (s.steps for s in solutions))),
                     "truncated_solutions": sum(d > 0 for d in dropped), "steps_left_out": sum(dropped)}


def collate_steps(processor: StepItems) -> Callable[[Sequence[EncodedSolution]], dict]:
    """``batch -> {"items": model inputs, "labels": (S,) bool, "solution": (S,) each step's row, "cost": (2,)
    real and padded tokens}``, the steps in row order as the model returns them."""

    def collate(batch: Sequence[EncodedSolution]) -> dict:
        lengths = [e.length for e in batch]
        return {"items": processor.collate([e.item for e in batch]),
                "labels": torch.tensor([y for e in batch for y in e.labels], dtype=torch.bool),
                "solution": torch.tensor([k for k, e in enumerate(batch) for _ in e.labels], dtype=torch.long),
                "cost": torch.tensor([sum(lengths), len(batch) * max(lengths)])}

    return collate


def step_metrics(probs: np.ndarray, labels: np.ndarray, solution: np.ndarray) -> dict:
    """Step accuracy (threshold 1/2), step log-loss, and solution accuracy under the min rule, over (S,) arrays."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    right = (p >= 0.5) == labels
    by_solution = [(right[solution == k].all()) for k in np.unique(solution)]
    nan = float("nan")
    return {"step_accuracy": float(right.mean()) if len(p) else nan,
            "step_log_loss": float(-(labels * np.log(p) + (~labels) * np.log(1 - p)).mean()) if len(p) else nan,
            "solution_all_steps_right": float(np.mean(by_solution)) if by_solution else nan,
            "steps": len(p), "wrong_steps": int((~labels).sum()), "solutions": len(by_solution)}


@torch.inference_mode()
def predict_steps(model: ProcessRewardNet, data: Sequence[EncodedSolution], collate: Callable, acc: Accelerator,
                  batch_size: int) -> dict:
    """Step metrics of ``data`` (scored whole on each process: no collective in evaluation)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda k: data[k].length)
    probs, labels, rows = [], [], []
    for start in range(0, len(order), batch_size):
        chunk = [data[k] for k in order[start: start + batch_size]]
        batch = send_to_device(collate(chunk), acc.device)
        with acc.autocast():
            probs.append(torch.sigmoid(model(**batch["items"], steps=True)).float().cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
        rows.append(batch["solution"].cpu().numpy() + start)
    model.train(was_training)
    cat = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype=dtype)
    return step_metrics(cat(probs, np.float32), cat(labels, bool), cat(rows, np.int64))


class StepTrainer:
    """The loop: micro-batches of solutions, ``grad_accum`` of them per optimiser step, evaluation every
    ``train.eval_every`` steps (else once per epoch) keeping the best weights by ``train.metric_for_best``."""

    def __init__(self, cfg: ExperimentConfig, model: ProcessRewardNet, processor: StepItems,
                 train_data: list[EncodedSolution], eval_data: list[EncodedSolution], acc: Accelerator, out: Path,
                 on_evaluate: Callable[[int, dict], None] | None = None):
        t = cfg.train
        self.cfg, self.acc, self.out, self.on_evaluate, self.eval_data = t, acc, out, on_evaluate, eval_data
        self.collate = collate_steps(processor)
        self.loss_fn: StepLoss = get_loss(t.loss)
        self.class_weight = class_weights(torch.tensor([y for e in train_data for y in e.labels]), t.step_class_weight)
        lengths = [e.length for e in train_data]
        widths = [padded_width(n, t.pad_to_multiple_of) for n in lengths]  # what a token budget counts
        self.sampler = TokenBudgetBatchSampler(widths, [1] * len(lengths), t.max_tokens_per_batch, t.batch_size,
                                               seed=t.seed) if t.max_tokens_per_batch else \
            LengthGroupedBatchSampler(lengths, t.batch_size, seed=t.seed, group_by_length=t.group_by_length)
        loader = torch.utils.data.DataLoader(train_data, batch_sampler=self.sampler, collate_fn=self.collate,
                                             num_workers=t.num_workers, generator=torch.Generator().manual_seed(t.seed))
        optimizer = build_optimizer(model.parameter_groups(), t)
        self.model, self.optimizer, self.loader = acc.prepare(model, optimizer, loader)
        self.raw_model: ProcessRewardNet = acc.unwrap_model(self.model)
        self.steps_per_epoch = max(1, math.ceil(len(self.loader) / t.grad_accum))
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * self.steps_per_epoch))
        self.scheduler = build_scheduler(getattr(self.optimizer, "optimizer", self.optimizer), t, self.total_steps)
        self.metric = METRIC_NAMES.get(t.metric_for_best, t.metric_for_best)
        self.step, self.best_step, self.best_metric, self.best_log_loss, self.best_weights = 0, None, None, math.inf, {}
        self.history: list[dict] = []

    def _log(self, record: dict) -> None:
        self.history.append(record)
        self.acc.log({f"{record['kind']}/{k}": v for k, v in record.items() if isinstance(v, float)}, step=self.step)

    def evaluate(self) -> dict:
        metrics = predict_steps(self.raw_model, self.eval_data, self.collate, self.acc, self.cfg.eval_batch_size)
        self._log({"step": self.step, "kind": "eval", **metrics})
        if self.on_evaluate is not None:
            self.on_evaluate(self.step, metrics)
        if self.metric not in metrics:
            raise ValueError(f"train.metric_for_best={self.cfg.metric_for_best}: a process reward model reports "
                             f"{', '.join(k for k, v in metrics.items() if isinstance(v, float))}")
        tied = metrics[self.metric] == self.best_metric and metrics["step_log_loss"] < self.best_log_loss
        if tied or is_improvement(self.metric, metrics[self.metric], self.best_metric):  # ties: the lower log-loss
            self.best_metric, self.best_log_loss = metrics[self.metric], metrics["step_log_loss"]
            self.best_step = self.step
            self.best_weights = {n: p.detach().clone() for n, p in self.raw_model.named_parameters() if p.requires_grad}
        return metrics

    def _micro_step(self, batch: dict) -> float:
        with self.acc.autocast():
            logits = self.model(**batch["items"], steps=True)  # (S,)
            loss = self.loss_fn(logits, batch["labels"], batch["solution"], self.class_weight) / self.cfg.grad_accum
        self.acc.backward(loss)
        return loss.item() * self.cfg.grad_accum

    def train(self) -> dict:
        t, acc, start, epoch, running = self.cfg, self.acc, time.perf_counter(), 0, []
        eval_every, tokens, eval_seconds = t.eval_every or self.steps_per_epoch, torch.zeros(2, dtype=torch.long), 0.0
        self.model.train()
        while self.step < self.total_steps:
            self.loader.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            for k, batch in enumerate(self.loader):
                running.append(self._micro_step(batch))
                tokens += batch["cost"].cpu()
                if (k + 1) % t.grad_accum and k + 1 < len(self.loader):
                    continue
                if t.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                if self.step % 10 == 0 or self.step == self.total_steps:
                    self._log({"step": self.step, "kind": "train", "loss": float(np.mean(running))})
                    running = []
                if self.eval_data and (self.step % eval_every == 0 or self.step == self.total_steps):
                    began = time.perf_counter()
                    self.evaluate()
                    eval_seconds += time.perf_counter() - began
                if self.step >= self.total_steps:
                    break
            epoch += 1
        seconds = time.perf_counter() - start - eval_seconds
        return {"train_seconds": seconds, "eval_seconds": eval_seconds, "tokens": int(tokens[0]) * acc.num_processes,
                "padded_tokens": int(tokens[1]) * acc.num_processes, "peak_rss_mb_training": peak_rss_mb()}

    def restore_best(self) -> None:
        params = dict(self.raw_model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_weights.items():
                params[name].copy_(value)


def train_steps(cfg: ExperimentConfig, *, resume: bool = False,
                on_evaluate: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train a process reward model as ``cfg`` says (see :func:`step_config`); saves ``<output_dir>/model`` (unless
    ``train.save_model`` is false) and ``metrics.json``, whose ``eval`` holds the held-out step metrics."""
    if resume:
        raise ValueError("--resume is not supported for process reward models (model.kind=prm) yet")
    cfg = step_config(cfg)
    out, state = Path(cfg.train.output_dir), process_group()
    set_seed(cfg.train.seed)
    processor = PRM_KIND.processor(cfg)
    train_sol, eval_sol, reports = load_step_data(cfg)
    (train_enc, reports["train_encoding"]), (eval_enc, reports["eval_encoding"]) = (
        encode_steps(train_sol, processor), encode_steps(eval_sol, processor))
    if state.is_main_process:
        print(f"data: {len(train_enc)} train / {len(eval_enc)} eval solutions; steps left out of long solutions: "
              f"{reports['train_encoding']['steps_left_out']} train, {reports['eval_encoding']['steps_left_out']} "
              f"eval (data.max_length={cfg.data.max_length})")
    model = PRM_KIND.build(cfg, [], processor)
    first = lambda device, n: send_to_device(collate_steps(processor)(train_enc[: n or cfg.train.batch_size]),
                                             device)["items"]
    precision, reports["precision"] = choose_precision(cfg.train.mixed_precision, model, first, state.device)
    acc = Accelerator(mixed_precision=precision, log_with=trackers(cfg.train.log_with) or None,
                      project_dir=str(out / "logs"))
    out.mkdir(parents=True, exist_ok=True)
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    acc.init_trackers("rewardlab", config={k: str(v) for k, v in cfg.to_dict()["train"].items()})
    trainer = StepTrainer(cfg, model, processor, train_enc, eval_enc, acc, out, on_evaluate)
    throughput = trainer.train()
    trainer.restore_best()
    metrics = {"kind": PRM_KIND.name, "loss": cfg.train.loss, "class_weight": {"wrong": trainer.class_weight[0],
                                                                              "correct": trainer.class_weight[1]},
               "train": predict_steps(trainer.raw_model, train_enc, trainer.collate, acc, cfg.train.eval_batch_size)}
    if eval_enc:
        metrics["eval"] = predict_steps(trainer.raw_model, eval_enc, trainer.collate, acc, cfg.train.eval_batch_size)
    metrics.update(best_step=trainer.best_step, steps=trainer.step, data=reports, **throughput)
    model_dir = out / "model"
    if acc.is_main_process:
        if cfg.train.save_model:
            save_model(trainer.raw_model, processor, model_dir, {"backbone": cfg.model.backbone, "temperature": 1.0},
                       kind=PRM_KIND.name, extra_files={"rewardlab.yaml": config_text})
        (out / "config.yaml").write_text(config_text)
        (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trainer.history))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    acc.wait_for_everyone()
    for tracker in acc.trackers:
        tracker.finish()
    return TrainResult(model_dir=model_dir, metrics=metrics)
