"""A process reward model against an outcome reward model trained on the same solutions' final correctness.

    python bench/prm.py                 # about 15 min on 2 cores
    python bench/prm.py --train 300     # a quick look

Both are the ``prm`` kind on the same backbone (MiniLM), data, budget and seed (``rewardlab/configs/demo_prm.yaml``);
they differ only in the supervision:

- ``PRM``: ``train.loss=step_bce``, a label for every step (Math-Shepherd's: a step is wrong from the first slip on);
- ``ORM``: ``train.loss=step_bce_last``, the last step's label only, which is the solution's final correctness
  (an outcome reward model read at the end of the solution, as ORMs are).

Data: the generated arithmetic and unit-conversion chains of ``rewardlab demo --task prm``
(``rewardlab.data.synthetic_steps``): the demo's 1,200 training and 150 validation solutions; 300 held-out
solutions for the step metrics and ProcessBench's first-error task; 200 held-out problems with 4 candidate
solutions each, one right and three with a slip, for best-of-4 selection (the PRM ranks by its steps' minimum,
the ORM by its last step; picking at random is right 25 % of the time).

Columns: step accuracy, wrong-step F1, first-error F1 (ProcessBench: the harmonic mean of finding the exact
first wrong step on flawed solutions and calling correct ones correct), solution accuracy (min of steps for the
PRM, the last step for the ORM), best-of-4 accuracy, training seconds. The table goes to
``docs/results/prm.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from rewardlab.config import load_config
from rewardlab.data.synthetic_steps import make_candidates, make_solutions
from rewardlab.demo_prm import write_demo_data
from rewardlab.evaluation.steps import evaluate_solutions
from rewardlab.scoring import RewardModel
from rewardlab.train.experiment import run_experiment

ROWS = {"PRM": ("step_bce", "min"), "ORM": ("step_bce_last", "last")}


def best_of_n(rm: RewardModel, groups: list, aggregate: str) -> float:
    """Share of problems where the candidate ``rm`` scores highest (steps aggregated by ``aggregate``) is right."""
    prompts = [c.prompt for g in groups for c in g]
    probs = rm.score_steps_batch(prompts, [list(c.steps) for g in groups for c in g])
    agg = {"min": np.nanmin, "last": lambda p: p[-1]}[aggregate]
    scores = np.array([agg(np.asarray(p)) for p in probs]).reshape(len(groups), -1)
    return float(np.mean([g[int(np.argmax(s))].correct for g, s in zip(groups, scores)]))


def run_row(name: str, loss: str, aggregate: str, parts: dict, work: Path, args) -> dict:
    config = Path(str(resources.files("rewardlab.configs") / "demo_prm.yaml"))
    cfg = load_config(config, [f"data.train={parts['train']}", f"data.eval={parts['validation']}",
                               f"train.output_dir={work / name}", f"train.loss={loss}", f"train.seed={args.seed}",
                               f"model.step_aggregate={aggregate}", *args.set])
    started = time.time()
    result = run_experiment(cfg)
    seconds = time.time() - started
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    m = evaluate_solutions(rm, make_solutions(args.test, seed=1000 + args.seed), work / name / "eval",
                           n_boot=200, plots=False)
    groups = make_candidates(args.problems, 4, seed=2000 + args.seed)
    return {"row": name, "step accuracy": m["steps"]["step_accuracy"]["value"],
            "wrong-step F1": m["steps"]["wrong_step_f1"]["value"], "first-error F1": m["first_error"]["f1"]["value"],
            "solution accuracy": m["solution_accuracy"][aggregate]["value"],
            "best-of-4": best_of_n(rm, groups, aggregate), "train s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=1200, help="training solutions (the demo's 1,200)")
    p.add_argument("--test", type=int, default=300, help="held-out solutions for the step and first-error metrics")
    p.add_argument("--problems", type=int, default=200, help="held-out problems with 4 candidates for best-of-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="a config override for both rows")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = write_demo_data(work / "data", args.seed, {"train": args.train, "validation": 150, "heldout": 0})
        rows = [run_row(name, loss, agg, parts, work, args) for name, (loss, agg) in ROWS.items()]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) and c != "train s" else
                               f"{r[c]:.0f}" if c == "train s" else str(r[c]) for c in cols) + " |")
    prm, orm = rows
    print(f"\nPRM − ORM: first-error F1 {prm['first-error F1'] - orm['first-error F1']:+.3f}, "
          f"best-of-4 {prm['best-of-4'] - orm['best-of-4']:+.3f}")


if __name__ == "__main__":
    main()
