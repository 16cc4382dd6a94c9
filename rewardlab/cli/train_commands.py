"""Commands that train: ``train``, ``demo`` and ``tune``. Each parses, makes one library call, prints."""

from __future__ import annotations

from pathlib import Path

from rewardlab.cli.config_parsers import TUNE_FLAGS
from rewardlab.cli.flags import config_from_args
from rewardlab.config import load_config


def cmd_train(args) -> int:
    from rewardlab.train.experiment import run_experiment

    shortcuts = {"data.on_bad_row": args.on_bad_row, "data.train": args.data, "data.eval": args.eval_data,
                 "train.output_dir": args.out}
    # Shortcuts come first so an explicit --set of the same key wins.
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value] + list(args.overrides)
    cfg = load_config(args.config, overrides)
    result = run_experiment(cfg, resume=args.resume)
    if not _main_process():
        return 0
    if cfg.data.folds > 1:
        cv = result.metrics
        for name in ("accuracy", "log_loss", "three_way_accuracy", "three_way_log_loss"):
            if name in cv["mean"]:
                print(f"{name}: {cv['mean'][name]:.4f} ± {cv['std'][name]:.4f} over {cv['folds']} folds")
        print(f"per-fold models and metrics: {cfg.train.output_dir}/fold-*/; summary: "
              f"{cfg.train.output_dir}/cv_metrics.json")
    elif cfg.train.ensemble_size > 1:
        if m := result.metrics.get("eval"):
            members = ", ".join(f"{a:.3f}" for a in m["member_accuracy"])
            print(f"ensemble of {m['members']}: accuracy {m['accuracy']:.3f} (members {members}); "
                  f"uncertainty finds errors with AUROC {m['std_auroc_for_errors']}")
        print(f"model: {result.model_dir}")
    else:
        print_metrics(result.metrics)
        print(f"model: {result.model_dir}\nmetrics: {Path(cfg.train.output_dir) / 'metrics.json'}")
    return 0


def _main_process() -> bool:
    """Whether this process reports: the main one under ``accelerate launch``, the only one otherwise."""
    from accelerate import PartialState

    return PartialState().is_main_process


def print_metrics(metrics: dict) -> None:
    """One line per split of a training run's metrics."""
    for split in ("train", "eval"):
        if split in metrics and "step_accuracy" in metrics[split]:  # a process reward model's steps
            m = metrics[split]
            print(f"{split:>5}: step accuracy {m['step_accuracy']:.3f}  step log-loss {m['step_log_loss']:.3f}  "
                  f"({m['steps']} steps, {m['wrong_steps']} wrong, in {m['solutions']} solutions)")
        elif split in metrics:
            m = metrics[split]
            print(f"{split:>5}: accuracy {m['accuracy']:.3f}  log-loss {m['log_loss']:.3f}  "
                  f"mean margin {m['mean_margin']:.3f}  ({m['pairs']} pairs)")


def cmd_demo(args) -> int:
    from rewardlab.demo import run_demo
    from rewardlab.demo_image import run_image_demo
    from rewardlab.demo_prm import run_prm_demo

    run = {"text": run_demo, "image": run_image_demo, "prm": run_prm_demo}[args.task]
    run(Path(args.out or ("runs/demo" if args.task == "text" else f"runs/demo-{args.task}")), args.overrides)
    return 0


def cmd_tune(args) -> int:
    from rewardlab.tune import TuneSettings, run_tune

    settings = config_from_args(TuneSettings, args, TUNE_FLAGS, out=args.out or f"runs/tune/{args.study}")
    result = run_tune(settings)
    if result.refit is not None:
        print_metrics(result.refit.metrics)
        print(f"model: {result.refit.model_dir}")
    return 0
