"""The ``train`` section: the optimiser, schedule, loss, batching, debiasing, ensembles, precision and saving."""

from __future__ import annotations

from dataclasses import dataclass

from rewardlab.config.options import check_types, choice, option, positive
from rewardlab.contracts.nuisance import feature_index
from rewardlab.contracts.registry import LOSSES


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    output_dir: str = option("runs/rewardlab", "Where the model, metrics, logs and resume states go.")
    epochs: float = option(1.0, "Passes over the training data (fractions allowed).")
    max_steps: int | None = option(None, "Stop after this many optimiser steps (overrides `epochs` when set).")
    batch_size: int = option(16, "Comparisons per process per micro-batch (a ranking of K counts once); with "
                           "max_tokens_per_batch, the most a micro-batch may hold.")
    max_tokens_per_batch: int | None = option(None, "Token budget of a micro-batch: as many comparisons as fit in this "
                                            "many padded tokens (items x longest item; an image item counts its "
                                            "image's tokens too), so peak memory is bounded by the budget, not by the "
                                            "longest examples. The loss is still the mean over the pairs of each "
                                            "optimiser step.")
    pad_to_multiple_of: int = option(1, "Text models (text, cross_encoder, prm kinds): pad each batch's width up to a "
                                   "multiple of this (not with model.packing). On a GPU, 64 leaves at most 16 widths up to 1,024 tokens, so work done once per "
                                   "new tensor shape (kernel plans, allocator blocks) is done 16 times, not once per "
                                   "batch; each row still pays its padding. 1: pad to the batch's longest item.")
    eval_batch_size: int = option(64, "Sequences per forward pass when evaluating.")
    grad_accum: int = option(1, "Micro-batches per optimiser step.")
    lr_backbone: float = option(2e-5, "Learning rate of the backbone (or its LoRA adapters).")
    lr_head: float | None = option(None, "Learning rate of the heads (everything outside the backbone but fusion); "
                                 "unset: 10 x lr_backbone.")
    layer_decay: float = option(1.0, "Layer-wise learning-rate decay of the backbone (ELECTRA, BEiT): its top block "
                              "trains at lr_backbone, each block below at this factor times the one above, the "
                              "embeddings below the lowest; 1 = one rate for the whole backbone.")
    lr_fusion: float = option(3e-4, "model.kind=multimodal: learning rate of the fusion layers (trained from scratch).")
    lr_outcome: float = option(0.02, "Tie-aware losses (rao_kupper, davidson): learning rate of the tie parameter "
                             "(one scalar, no weight decay).")
    mixup_alpha: float = option(0.0, "Mixup for preference pairs (0 = off): each pair (a over b) adds mixed items "
                              "λa+(1-λ)b and λb+(1-λ)a, λ ~ Beta(alpha, alpha), judged with soft label λ. Needs items "
                              "that can be mixed (model.kind=multimodal), not token ids.")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms).")
    warmup_ratio: float = option(0.1, "Fraction of steps spent warming the learning rate up from 0.")
    schedule: str = option("linear", "Decay after warm-up: linear (as transformers and TRL default to), cosine or "
                           "constant.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this; 0 disables clipping.")
    loss: str = option("bradley_terry", "Pairwise loss: see `rewardlab losses` for the names. Process reward models "
                     "(model.kind=prm) take a per-step loss: step_bce (every step), step_bce_prefix (the steps up "
                     "to and including the first wrong one) or step_bce_last (the last step only); there the "
                     "pairwise default bradley_terry stands for step_bce.")
    step_class_weight: str = option("none", "Per-step losses: the weight of wrong steps against correct ones, for "
                                  "data where one class is rare: none (1 each, so probabilities stay calibrated), "
                                  "auto (inverse class frequency of the training steps, so both classes weigh the "
                                  "same in total) or a number (the wrong steps' weight; correct steps weigh 1).")
    margin_scale: float = option(1.0, "bt_margin loss: multiplier on the rating gap used as margin.")
    label_smoothing: float = option(0.1, "label_smoothing loss: probability mass given to the other order.")
    focal_gamma: float = option(2.0, "focal loss: focusing exponent.")
    contrastive_temperature: float = option(1.0, "contrastive loss: temperature dividing the rewards.")
    contrastive_negatives: str = option("batch", "contrastive loss: batch (each preferred item also meets every item "
                                      "rejected in the batch's other comparisons) or comparison (only the items it "
                                      "beats in its own; Bradley-Terry on plain pairs).")
    center_rewards: float = option(0.0, "Weight of a penalty on mean squared reward, keeping rewards centred at 0.")
    balance: str = option("none", "Reweight training pairs so groups contribute equally to the loss: none, attribute "
                        "(each reward head), or attribute_gap (each head x rating-gap bin: small, medium, large).")
    debias: list = option([], "Nuisance features the reward must not follow, e.g. [length]: a disentangled reward (after "
                        "ODIN, Chen et al. 2024). Beside the reward sits a nuisance reward that reads the feature "
                        "alone (a weight per unit of log length, started at a length-only fit of the training pairs); "
                        "the loss sees their sum, and the reward's margins are kept from following the feature "
                        "(train.debias_weight). Evaluation, scoring, serving and the saved model use the reward "
                        "without the nuisance part.")
    debias_weight: float = option(1.0, "debias: weight of the penalty on the reward's slope of margins on log-length "
                                "gaps over each batch's pairs.")
    length_penalty: float = option(0.0, "A length-regularised loss: this weight times the squared slope, over each batch's "
                                 "pairs, of reward margins on log-length gaps (reward per unit of log length; 0 = off).")
    length_matched: bool = option(False, "Length-matched sampling: each batch holds as many pairs the longer "
                                "response won as pairs the shorter one won: each epoch draws equally many of both "
                                "(the smaller group cycled, the larger subsampled afresh each epoch), so an epoch "
                                "keeps its size; pairs of equal length fill in proportionally.")
    ensemble_size: int = option(1, "Train this many members (seeds seed, seed+1, ...) and save them as one ensemble "
                              "checkpoint: scores are their mean, their spread is the uncertainty. 1 = one model.")
    ensemble_bootstrap: bool = option(False, "ensemble_size > 1: each member trains on its own bootstrap resample "
                                    "(drawn with replacement) of the training comparisons.")
    ensemble_shared_backbone: bool = option(False, "ensemble_size > 1: the members are heads over one shared backbone "
                                          "(one forward pass scores them all; about the cost of one model, less "
                                          "diverse members) instead of separate models (not for "
                                          "model.kind=judge). With ensemble_bootstrap each head weighs each pair by "
                                          "its own Poisson(1) draw.")
    ema_decay: float = option(0.0, "Keep an exponential moving average of weights with this decay (0 = off); "
                            "evaluation and the saved model use it.")
    eval_every: int = option(0, "Evaluate every N optimiser steps (0 = once per epoch).")
    save_every: int = option(0, "Save a resume state every N steps (0 = at each evaluation).")
    save_total_limit: int = option(2, "Resume states kept on disk (oldest removed first).")
    save_model: bool = option(True, "Write the final model to <output_dir>/model; false keeps only the config, "
                            "metrics and history (e.g. for hyperparameter-search trials, to save disk).")
    metric_for_best: str = option("accuracy", "Validation metric that selects the best model (higher is better, "
                                "except loss-like metrics).")
    early_stopping_patience: int = option(0, "Stop after this many evaluations without improvement (0 = never).")
    mixed_precision: str = option("auto", "no, fp16, bf16 or auto: on a GPU with bf16, time a few fp32 and bf16 steps "
                                "of the first batch and keep the faster (small backbones can be slower in bf16); on "
                                "a CPU with native bf16 (AVX512-BF16, AMX), the same on two comparisons, bf16 "
                                "needing to be 1.2x faster; fp32 elsewhere. The choice is printed and kept in "
                                "metrics.json.")
    compile: bool = option(False, "torch.compile the model (inductor, dynamic shapes: new batch lengths do not "
                         "recompile each time). The first steps pay the compilation. Needs a C++ compiler on CPU.")
    liger_kernel: bool = option(False, "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) in the backbone, for the "
                              "architectures Liger supports (Llama, Qwen2, Mistral, Gemma, ...); CUDA only, needs "
                              "pip install liger-kernel.")
    fsdp: bool = option(False, "Shard parameters, gradients and optimiser state over the processes (FSDP2, torch's "
                      "fully_shard: one unit per transformer block): for models too large to replicate. Needs several "
                      "processes (accelerate launch); resume states are then one slice per process, resumed with as "
                      "many processes. On CPU too (gloo).")
    group_by_length: bool = option(True, "Batch comparisons of similar length together to cut padding.")
    seed: int = option(0, "Seed for initialisation, shuffling and dropout.")
    log_with: list = option(["tensorboard"], "Accelerate trackers: tensorboard, wandb, mlflow (installed ones only).")
    progress: bool = option(True, "Show progress bars.")
    num_workers: int = option(0, "DataLoader worker processes.")

    def __post_init__(self) -> None:
        check_types(self, "train")
        positive("train.epochs", self.epochs)
        if self.max_steps is not None:
            positive("train.max_steps", self.max_steps)
        if self.max_tokens_per_batch is not None:
            positive("train.max_tokens_per_batch", self.max_tokens_per_batch)
        for name in ("batch_size", "pad_to_multiple_of", "eval_batch_size", "grad_accum", "save_total_limit",
                     "ensemble_size"):
            positive(f"train.{name}", getattr(self, name))
        for name in ("lr_backbone", "lr_fusion", "lr_outcome"):
            positive(f"train.{name}", getattr(self, name))
        if self.lr_head is not None:
            positive("train.lr_head", self.lr_head)
        positive("train.mixup_alpha", self.mixup_alpha, allow_zero=True)
        for name in ("weight_decay", "max_grad_norm", "center_rewards", "margin_scale", "eval_every",
                     "save_every", "early_stopping_patience", "num_workers", "focal_gamma"):
            positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        positive("train.contrastive_temperature", self.contrastive_temperature)
        choice("train.contrastive_negatives", self.contrastive_negatives, ("batch", "comparison"))
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"train.label_smoothing={self.label_smoothing!r} must be in [0, 0.5)")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"train.layer_decay={self.layer_decay!r} must be in (0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay!r} must be in [0, 1)")
        choice("train.schedule", self.schedule, ("cosine", "linear", "constant"))
        choice("train.balance", self.balance, ("none", "attribute", "attribute_gap"))
        try:
            feature_index(self.debias)
        except ValueError as err:
            raise ValueError(f"train.debias={self.debias!r}: {err}") from None
        for name in ("debias_weight", "length_penalty"):
            positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if self.length_matched and self.max_tokens_per_batch is not None:
            raise ValueError("train.length_matched=true draws fixed-size batches: unset train.max_tokens_per_batch")
        choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))
        if self.fsdp and self.compile:
            raise ValueError("train.fsdp=true with train.compile=true is not supported: set one of them to false")
        choice("train.loss", self.loss, LOSSES.names())
        if self.step_class_weight not in ("none", "auto"):
            try:
                positive("train.step_class_weight", float(self.step_class_weight))
            except ValueError:
                raise ValueError(f"train.step_class_weight={self.step_class_weight!r} must be none, auto or a "
                                 "number > 0") from None

    @property
    def head_lr(self) -> float:
        """``lr_head``, or 10 x ``lr_backbone`` when it is unset."""
        return self.lr_head if self.lr_head is not None else 10 * self.lr_backbone
