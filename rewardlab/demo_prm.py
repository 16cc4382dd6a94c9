"""``rewardlab demo --task prm``: a process reward model on generated step-by-step solutions.

Steps: generate arithmetic and unit-conversion chains with injected slips
(:func:`~rewardlab.data.synthetic_steps.make_solutions`; every step from the first slip on is wrong),
split them into train / validation / held-out sets (separate draws: no prompt is shared), train MiniLM as a
token classifier read at each step's separator, and evaluate it on the held-out solutions: step accuracy,
the first wrong step (ProcessBench's F1), solution accuracy per aggregate, beside the majority-class and
last-step baselines. Settings: ``rewardlab/configs/demo_prm.yaml`` plus overrides.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

from rewardlab.config import load_config
from rewardlab.data.synthetic_steps import make_solutions, write_stepwise_jsonl

SIZES = {"train": 1200, "validation": 150, "heldout": 300}
N_BOOT = 300  # bootstrap resamples for the intervals (the evaluation's 1000 would add time, not insight here)


def write_demo_data(folder: Path, seed: int, sizes: dict[str, int] = SIZES) -> dict[str, Path]:
    """The three parts, each its own seeded draw, as TRL stepwise rows under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_stepwise_jsonl(folder / f"{name}.jsonl", make_solutions(n, seed=seed * 10 + k))
            for k, (name, n) in enumerate(sizes.items())}


def run_prm_demo(out: Path, overrides: Sequence[str] = (), *, sizes: dict[str, int] = SIZES) -> dict:
    """Generate data, train and evaluate the PRM; print and return the held-out metrics."""
    from rewardlab.evaluation.run import evaluate
    from rewardlab.train.experiment import run_experiment

    config = Path(str(resources.files("rewardlab.configs") / "demo_prm.yaml"))
    seed = load_config(config, list(overrides)).train.seed
    parts = write_demo_data(out / "data", seed, sizes)
    cfg = load_config(config, [f"data.train={parts['train']}", f"data.eval={parts['validation']}",
                               f"train.output_dir={out}", *overrides])
    print(f"rewardlab demo --task prm: {sizes['train']} train / {sizes['validation']} validation / "
          f"{sizes['heldout']} held-out solutions, backbone {cfg.model.backbone}")
    result = run_experiment(cfg)
    print("evaluating the trained model on the held-out solutions ...")
    evaluation = evaluate(str(result.model_dir), str(parts["heldout"]), out / "eval", data_cfg=cfg.data,
                          n_boot=N_BOOT)
    print(evaluation.summary())
    print(f"\ncheckpoint: {result.model_dir}\nreport:     {out / 'eval' / 'report.html'}")
    return evaluation.metrics
