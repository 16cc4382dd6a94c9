"""``rewardlab demo``: split the embedded data by prompt, train, evaluate, write a report."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Sequence

from rewardlab.config import load_config
from rewardlab.data.load import load_comparisons
from rewardlab.data.splits import split_by_group


def _write_pairs(comparisons, path: Path) -> None:
    with path.open("w") as fh:
        for c in comparisons:
            for pair in c.iter_pairs():
                row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "group": pair.group,
                       **pair.meta}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


HELD_OUT, VALIDATION = 0.2, 0.15  # shares of the prompts held out, then of the rest kept for validation


def split_three(comparisons, seed: int) -> tuple[list, list, list]:
    """(train, validation, held-out) comparisons, split by group: the checkpoint is chosen on the validation
    prompts, never on the held-out ones it is then scored on."""
    rest, held_out = split_by_group(comparisons, HELD_OUT, split_by="group", seed=seed)
    train, validation = split_by_group(rest, VALIDATION, split_by="group", seed=seed)
    return train, validation, held_out


def run_demo(out: Path, overrides: Sequence[str] = ()) -> dict:
    from rewardlab.evaluation.run import evaluate
    from rewardlab.train.run import train

    config = Path(str(resources.files("rewardlab.configs") / "demo.yaml"))
    base = load_config(config, list(overrides))
    comps, _ = load_comparisons("default", base.data)
    train_part, val_part, eval_part = split_three(comps, base.data.seed)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for part, name in ((train_part, "train"), (val_part, "validation"), (eval_part, "heldout")):
        _write_pairs(part, out / "data" / f"{name}.jsonl")
    cfg = load_config(config, [f"data.train={out / 'data' / 'train.jsonl'}",
                               f"data.eval={out / 'data' / 'validation.jsonl'}",
                               f"train.output_dir={out}", *overrides])
    print(f"rewardlab demo: {len(train_part)} train / {len(val_part)} validation / {len(eval_part)} held-out "
          f"pairs (split by prompt), backbone {cfg.model.backbone}")
    result = train(cfg)
    print("evaluating the trained model on the held-out pairs ...")
    evaluation = evaluate(str(result.model_dir), str(out / "data" / "heldout.jsonl"), out / "eval",
                          data_cfg=cfg.data, group_by=["category", "kind", "topic"])
    print(evaluation.summary())
    m = evaluation.metrics["groups"]["category"]
    for name, g in m.items():
        print(f"  {name:>8} preferences: accuracy {g['accuracy']['value']:.3f} ({g['pairs']} pairs)")
    print(f"\ncheckpoint: {result.model_dir}\nreport:     {out / 'eval' / 'report.html'}")
    return evaluation.metrics
