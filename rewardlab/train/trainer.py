"""The training loop on Hugging Face Accelerate.

The trainer receives a built model, loss, data and optimiser and only runs the
loop: one ``_step`` serves training and evaluation; gathering across processes
happens here and nowhere else. It knows nothing of model kinds: a batch is
``{"items": ..., "pairs": PairTable}``, the model maps items to rewards (N, H),
and each pair is read on its own head. It works unchanged on CPU, one GPU or
several processes (DDP; FSDP, a model sharded before it arrives, see
:mod:`rewardlab.train.sharding`; or DeepSpeed ZeRO, see :mod:`rewardlab.train.zero`), with mixed precision
where the device supports it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device
from torch import nn
from tqdm.auto import tqdm

from rewardlab.config import TrainConfig
from rewardlab.data.collate import EncodedComparison, PreferenceCollator
from rewardlab.data.sampling import build_batch_sampler
from rewardlab.losses import weighted_mean
from rewardlab.metrics.pairwise import is_improvement
from rewardlab.models.base import RewardNet
from rewardlab.train import checkpoint as ckpt, sharding, zero
from rewardlab.train.ema import EMA
from rewardlab.train.results import LoopState, Predictions, peak_rss_mb


class Trainer:
    def __init__(self, *, accelerator: Accelerator, model: RewardNet, loss_fn: Callable,
                 optimizer: torch.optim.Optimizer, scheduler_factory: Callable, train_data: Sequence[EncodedComparison],
                 eval_data: Sequence[EncodedComparison], collator: PreferenceCollator, cfg: TrainConfig,
                 output_dir: Path, on_evaluate: Callable[[int, dict], None] | None = None,
                 penalties: dict[str, tuple[float, Callable]] | None = None):
        self.acc, self.cfg, self.output_dir = accelerator, cfg, Path(output_dir)
        self.loss_fn = loss_fn  # (judged, pairs) -> per-pair terms (P,); see rewardlab.losses.build_pair_loss
        self.penalties = dict(penalties or {})  # training-only extra terms; see rewardlab.train.penalties
        self.on_evaluate = on_evaluate  # called with (step, metrics) after each evaluation; may raise to stop
        self.collator, self.eval_data = collator, list(eval_data)
        self.sampler = build_batch_sampler(train_data, cfg)
        # Its own generator: otherwise each new iterator draws a seed from the global RNG, shifting the
        # dropout stream of a resumed run away from the uninterrupted one.
        loader = torch.utils.data.DataLoader(list(train_data), batch_sampler=self.sampler, collate_fn=collator,
                                             num_workers=cfg.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.seed))
        self.zero = zero.stage(accelerator)  # DeepSpeed ZeRO's stage, 0 without it
        if self.zero:
            if sharding.model_is_sharded(model):
                raise ValueError("train.fsdp shards the model itself: launch without DeepSpeed, or set train.fsdp=false")
            if self.zero == 3 and cfg.ema_decay > 0:
                raise ValueError("train.ema_decay under ZeRO stage 3 is not supported (the average needs whole "
                                 "parameters every step): use ZeRO stage 2 or train.fsdp=true")
            zero.check_model(model)
            zero.configure(accelerator, cfg)
        # Each param group's parameters as built: ZeRO flattens them, and its resume states are written per parameter.
        self.param_groups = [list(g["params"]) for g in optimizer.param_groups]
        client = optimizer
        if sharding.model_is_sharded(model):  # sharded by train.fsdp: Accelerate must not wrap it in DDP
            self.optimizer, self.loader = accelerator.prepare(optimizer, loader)
            self.model = model
        else:
            self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.raw_model: RewardNet = accelerator.unwrap_model(self.model, keep_torch_compile=False)
        # Sharded parameters (ours or Accelerate's FSDP): every process forwards in step and saves its own slices.
        self.sharded = sharding.model_is_sharded(self.raw_model)
        self.collective_forward = self.sharded or self.zero == 3  # every forward gathers parameters
        self.ema = EMA(self.raw_model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] = {}  # snapshot at the best evaluation (EMA weights if on)
        self.steps_per_epoch = max(1, math.ceil(len(self.loader) / cfg.grad_accum))
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        # Built after prepare(): the per-process loader length fixes the schedule. Stepped once per
        # optimiser step, by the loop. ZeRO steps the client optimiser's param groups (their learning rates).
        if not self.zero:
            client = getattr(self.optimizer, "optimizer", self.optimizer)  # Accelerate's wrapper holds it
        self.scheduler = scheduler_factory(client, self.total_steps)

    # ------------------------------------------------------------------ one step

    def _step(self, batch: dict, normalizer: torch.Tensor | None = None, model: nn.Module | None = None):
        """Forward one batch through ``model`` (the prepared one by default); returns (loss, rewards (N, H),
        judged pairs).

        The model's outcome model reads each pair's rewards (on the pair's own head) and
        gives its scores and outcome log-probabilities. The loss is Σ w·ℓ / ``normalizer``
        (the pair weight of the whole optimiser step, see :meth:`_accumulate`), or the
        batch's weighted mean when no normalizer is given. In training, each penalty is
        added with its weight times this batch's share of the step's pair weight.
        """
        rewards = (self.model if model is None else model)(**batch["items"])  # (N, H)
        pairs = batch["pairs"]
        judged = self.raw_model.outcome(rewards, pairs)  # chosen (P,), rejected (P,), log_probs (P, 3)
        per_pair = self.loss_fn(judged, pairs)
        if normalizer is None:
            loss = weighted_mean(per_pair, pairs.weight)
        else:
            loss = (per_pair * pairs.weight).sum() / normalizer
        if self.penalties and self.model.training:
            share = 1.0 if normalizer is None else pairs.weight.sum() / normalizer
            for weight, penalty in self.penalties.values():
                term = penalty(rewards, batch, self.raw_model)
                if term is not None:
                    loss = loss + weight * share * term
        return loss, rewards, judged

    def _step_groups(self, loader) -> Iterator[list[dict]]:
        """The loader's micro-batches in groups of ``grad_accum``: one group per optimiser step."""
        it = iter(loader)
        while group := list(itertools.islice(it, self.cfg.grad_accum)):
            yield group

    def _accumulate(self, group: list[dict]) -> torch.Tensor:
        """Forward and backward every micro-batch of one optimiser step; returns its weighted-mean loss, a
        0-d tensor left on the device: reading it would make the host wait for the device every step.

        Each micro-batch contributes Σ w·ℓ / W, W being the pair weight of the whole step on
        every process (DDP averages gradients over the processes, hence W / processes
        below). The step's gradient is then that of the weighted mean over all its pairs,
        however they were cut into micro-batches (token budgets make them uneven) and
        however many processes share them.
        """
        acc = self.acc
        local = torch.stack([b["pairs"].weight.sum() for b in group]).sum()
        total = acc.reduce(local.detach().clone(), reduction="sum") if acc.num_processes > 1 else local.detach()
        normalizer = total / acc.num_processes
        summed = torch.zeros((), device=local.device)
        for k, batch in enumerate(group):
            last = k == len(group) - 1
            # DDP all-reduces once, at the step's end; ZeRO reduces and steps at the boundary marked there
            with contextlib.nullcontext() if last or self.zero else acc.no_sync(self.model):
                with acc.autocast():
                    loss, _, _ = self._step(batch, normalizer)
                if self.zero:
                    acc.deepspeed_engine_wrapped.backward(loss, sync_gradients=last)
                else:
                    acc.backward(loss)
            summed += loss.detach().float()
        return summed * normalizer / local.clamp_min(1e-12)

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def predict(self, data: Sequence[EncodedComparison]) -> Predictions:
        """Rewards of every pair in ``data``; each process scores its shard, results are gathered."""
        was_training = self.model.training
        self.model.eval()
        data = list(data)
        shard = data[self.acc.process_index:: self.acc.num_processes]
        shard.sort(key=lambda c: c.longest)
        heads = len(self.raw_model.heads)
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("comparison", "head", "chosen", "rejected", "tie",
                                                                "log_probs", "rewards")}
        batches, i = [], 0
        while i < len(shard):  # batches of about eval_batch_size items, shortest first
            batch, n = [], 0
            while i < len(shard) and (not batch or n + len(shard[i].items) <= self.cfg.eval_batch_size):
                batch.append(shard[i])
                n += len(shard[i].items)
                i += 1
            batches.append(batch)
        # A sharded model gathers its parameters in every forward, on every process together: processes with
        # fewer batches forward a filler batch (its rewards unused) until all have run as many.
        fillers = max(gather_object([len(batches)])) - len(batches) if self.collective_forward else 0
        # Never through DDP: its first forward after a training step broadcasts the buffers, a collective that
        # a process with no batch here (fewer comparisons than processes) would leave unmatched: a hang.
        ddp = isinstance(getattr(self.model, "_orig_mod", self.model), nn.parallel.DistributedDataParallel)
        model = self.raw_model if ddp else self.model
        for k, batch in enumerate(batches + [[data[0]]] * fillers):
            collated = send_to_device(self.collator(batch), self.acc.device)
            with self.acc.autocast():
                _, r, judged = self._step(collated, model=model)
            if k >= len(batches):
                continue
            pairs = collated["pairs"]
            for name, value in (("comparison", pairs.comparison), ("head", pairs.head), ("chosen", judged.chosen),
                                ("rejected", judged.rejected), ("tie", pairs.tie), ("log_probs", judged.log_probs),
                                ("rewards", r)):
                value = value.detach()
                columns[name].append((value.float() if value.is_floating_point() else value).cpu().numpy())
        empty = {"log_probs": np.zeros((0, 3)), "rewards": np.zeros((0, heads)), "tie": np.zeros(0, dtype=bool)}
        local = {k: np.concatenate(v) if v else empty.get(k, np.zeros(0, dtype=np.int64)) for k, v in columns.items()}
        shards = gather_object([local])  # one dict per process, in process order
        merged = {k: np.concatenate([s[k] for s in shards]) for k in local}
        order = np.argsort(merged["comparison"], kind="stable")  # pair order within a comparison kept
        self.model.train(was_training)
        return Predictions(merged["comparison"][order].astype(int), merged["head"][order].astype(int),
                           merged["chosen"][order].astype(np.float64), merged["rejected"][order].astype(np.float64),
                           merged["rewards"].astype(np.float64).reshape(-1, heads), merged["tie"][order].astype(bool),
                           merged["log_probs"][order].astype(np.float64).reshape(-1, 3))

    def evaluate(self) -> dict[str, float]:
        if self.ema is not None:
            with self.ema.applied(self.raw_model):
                pred = self.predict(self.eval_data)
        else:
            pred = self.predict(self.eval_data)
        return pred.summary(self.raw_model.heads, ties=self.raw_model.outcome.ties)

    # ------------------------------------------------------------------ resume state

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable parameters (under ZeRO, their whole fp32 master copies: every process must call it)."""
        named = {n: p for n, p in self.raw_model.named_parameters() if p.requires_grad}
        return zero.full_weights(named) if self.zero else named

    def save_state(self) -> Path:
        states = self.output_dir / "states"
        final = states / ckpt.state_name(self.state.step)
        tmp = states / f".tmp-{final.name}"
        trainable, optimizer = (self.trainable_state(), zero.optimizer_state(self.optimizer, self.param_groups)) \
            if self.zero else (None, None)  # read out of ZeRO's partitions together, by every process
        if self.sharded or self.acc.is_main_process:  # sharded: each process writes its own slices
            ckpt.save_state(tmp, trainable=trainable or self.trainable_state(),
                            optimizer=optimizer or self.optimizer.state_dict(),
                            scheduler=self.scheduler.state_dict(), ema=self.ema.shadow if self.ema else None,
                            best=self.best_weights or None, loop=self.state.__dict__,
                            shard=self.acc.process_index if self.sharded else None,
                            shards=self.acc.num_processes if self.sharded else None)
        self.acc.wait_for_everyone()
        ckpt.save_rng(tmp, self.acc.process_index)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            ckpt.finalize(tmp, final, self.cfg.save_total_limit)
        self.acc.wait_for_everyone()
        return final

    def load_state(self, folder: Path) -> None:
        saved = ckpt.load_state(folder, self.acc.process_index, self.acc.num_processes)
        params = dict(self.raw_model.named_parameters())
        optimizer = saved["optimizer"]
        if self.zero:
            zero.load_weights(params, saved["trainable"])
            zero.load_optimizer_state(self.optimizer, self.param_groups, optimizer)
        else:
            sharding.copy_into(params, saved["trainable"])
            if self.sharded:
                optimizer = sharding.optimizer_state_like(optimizer, sharding.optimizer_params(self.optimizer))
            self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None and saved["ema"] is not None:
            self.ema.load_state_dict({"decay": self.cfg.ema_decay,
                                      "shadow": {k: sharding.like(v, params[k]) for k, v in saved["ema"].items()}})
        self.state = LoopState(**saved["loop"])
        self.best_weights = {k: sharding.like(v, params[k]) for k, v in (saved["best"] or {}).items()}
        ckpt.set_rng_state(*saved["rng"])

    # ------------------------------------------------------------------ the loop

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - start

    def _log(self, values: dict, kind: str) -> None:
        record = {"step": self.state.step, "kind": kind, **values}
        self.state.history.append(record)
        flat = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        for head, metrics in values.get("by_head", {}).items():
            flat.update({f"{kind}/{k}/{head}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        self.acc.log(flat, step=self.state.step)
        if self.acc.is_main_process:
            with (self.output_dir / "history.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _evaluate_and_maybe_stop(self) -> bool:
        """Evaluate, keep the best model, save a resume state; True when early stopping triggers."""
        if not self.eval_data:
            return False
        metrics = self.evaluate()
        self._log(metrics, "eval")
        if self.on_evaluate is not None:
            self.on_evaluate(self.state.step, metrics)
        value = metrics[self.cfg.metric_for_best]
        if is_improvement(self.cfg.metric_for_best, value, self.state.best_metric):
            self.state.best_metric, self.state.best_step = value, self.state.step
            self.state.evals_without_improvement = 0
            weights = self.ema.shadow if self.ema is not None else self.trainable_state()
            self.best_weights = {k: v.detach().clone() for k, v in weights.items()}
        else:
            self.state.evals_without_improvement += 1
        patience = self.cfg.early_stopping_patience
        return bool(patience and self.state.evals_without_improvement >= patience)

    def train(self, resume_from: Path | None = None) -> LoopState:
        if resume_from is not None:
            self.load_state(resume_from)
        cfg, acc = self.cfg, self.acc
        eval_every = cfg.eval_every or self.steps_per_epoch
        save_every = cfg.save_every or eval_every
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc="train", disable=not (
            cfg.progress and acc.is_local_main_process), dynamic_ncols=True)
        self.model.train()
        start, pairs_at_start, stop, micro_batches = time.perf_counter(), self.state.pairs_seen, False, 0
        # (real, padded) tokens of this process's micro-batches. It and the step losses stay on the device and
        # are read every 10 steps: the host queues the next steps' work meanwhile.
        cost = torch.zeros(2, dtype=torch.long, device=acc.device)
        self.timings = {"eval_seconds": 0.0, "save_seconds": 0.0}
        running: list[torch.Tensor] = []
        while self.state.step < self.total_steps and not stop:
            loader = acc.skip_first_batches(self.loader, self.state.batches_in_epoch) \
                if self.state.batches_in_epoch else self.loader
            # Accelerate's loader re-seeds the sampler from its own pass counter, which restarts at 0
            # after a resume; pin both to our epoch so shuffling depends on (seed, epoch) only.
            loader.set_epoch(self.state.epoch)
            self.sampler.set_epoch(self.state.epoch)
            for group in self._step_groups(loader):
                step_loss = self._accumulate(group)
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state.batches_in_epoch += len(group)
                micro_batches += len(group)
                cost += sum(b["cost"].to(cost.device) for b in group)
                self.state.pairs_seen += sum(len(b["pairs"]) for b in group) * acc.num_processes
                running.append(step_loss)
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.raw_model)
                self.state.step += 1
                bar.update(1)
                if self.state.step % 10 == 0 or self.state.step == self.total_steps:
                    loss = torch.stack(running).mean().item()
                    bar.set_postfix(loss=f"{loss:.4f}")
                    self._log({"loss": loss, "lr_head": self.scheduler.get_last_lr()[-1]}, "train")
                    running = []
                if self.state.step % eval_every == 0 or self.state.step == self.total_steps:
                    with self._timed("eval_seconds"):
                        stop = self._evaluate_and_maybe_stop()
                if self.state.step % save_every == 0 or stop or self.state.step == self.total_steps:
                    with self._timed("save_seconds"):
                        self.save_state()
                if stop or self.state.step >= self.total_steps:
                    break
            else:
                self.state.epoch += 1
                self.state.batches_in_epoch = 0
        bar.close()
        # Training time excludes evaluation and resume-state writing (reported beside it), so throughput
        # measures the steps alone.
        elapsed = time.perf_counter() - start - self.timings["eval_seconds"] - self.timings["save_seconds"]
        self.throughput = {"train_seconds": elapsed, **self.timings,
                           "pairs_per_second": (self.state.pairs_seen - pairs_at_start) / max(elapsed, 1e-9),
                           "micro_batches": micro_batches,
                           "tokens": int(cost[0]) * acc.num_processes, "padded_tokens": int(cost[1]) * acc.num_processes,
                           "tokens_per_second": int(cost[0]) * acc.num_processes / max(elapsed, 1e-9),
                           "peak_rss_mb_training": peak_rss_mb()}
        if torch.cuda.is_available():
            self.throughput["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return self.state
