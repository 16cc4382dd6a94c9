"""One model vs K separate members vs K heads over one shared backbone, on HH-RLHF pairs.

    python bench/ensembles.py                     # MiniLM, K = 3, 1,200 training pairs; ~22 min on 2 cores
    python bench/ensembles.py --members 5 --max-train 400 --max-length 128   # a quick run

Data: the harmless-base dev pairs of ``../shared/data/hh-rlhf`` (never copied here), shuffled with a
fixed seed, cut at ``--max-train`` + ``--max-test``; the same held-out pairs for every row. Rows, all
with the same backbone, budget (epochs, batch, learning rates, max_length) and seed:

- single: one model (``train.ensemble_size=1``);
- separate: ``--members`` models with seeds seed … seed+K-1, each on a bootstrap resample;
- shared: ``--members`` heads over one backbone, each weighing every pair by its own Poisson(1) draw
  (``train.ensemble_shared_backbone=true``, ``train.ensemble_bootstrap=true``).

Columns: held-out accuracy of the ensemble mean (the model itself for single), the mean of its
members' accuracies, the ROC-AUC of the members' spread for telling misranked pairs from right ones,
accuracy with the most uncertain 25 % set aside, training time, and the time to score the held-out
pairs with every member (one pass for shared, K for separate). Timings are wall time on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from compare_trl import SHARED, hh_pairs  # noqa: E402


def write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_row(name: str, extra: list[str], train_file: Path, test: list, work: Path, args) -> dict:
    from rewardlab.config import load_config
    from rewardlab.evaluation.ensemble import member_margins, uncertainty_metrics
    from rewardlab.evaluation.predict import pair_margins
    from rewardlab.scoring import RewardModel
    from rewardlab.train.ensemble import train_ensemble
    from rewardlab.train.run import train

    cfg = load_config(None, [
        f"model.backbone={args.backbone}", "model.dropout=-1",  # MiniLM's own dropout, as the README table
        f"data.train={train_file}", "data.eval_fraction=0",
        f"data.max_length={args.max_length}", f"train.output_dir={work / name}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"train.seed={args.seed}", "train.progress=false", "train.log_with=[]",
        "train.schedule=cosine",  # the default when the README table was measured
        *extra])
    start = time.perf_counter()
    result = train_ensemble(cfg) if cfg.train.ensemble_size > 1 else train(cfg)
    train_s = time.perf_counter() - start
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    start = time.perf_counter()
    if rm.is_ensemble:
        metrics = uncertainty_metrics(member_margins(rm, test))  # every member in one pass per batch
    else:
        margin = pair_margins(rm, test)
        metrics = {"accuracy": float((margin > 0).mean()), "member_accuracy": [float((margin > 0).mean())]}
    score_s = time.perf_counter() - start
    return {"train_s": train_s, "score_s": score_s, **metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=1200)
    parser.add_argument("--max-test", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ensembles.json"))
    args = parser.parse_args(argv)
    if not (SHARED / "hh-rlhf").is_dir():
        print(f"{SHARED / 'hh-rlhf'} is missing: this benchmark reads HH-RLHF from ../shared/data", file=sys.stderr)
        return 2
    from rewardlab.config import DataConfig
    from rewardlab.data.load import load_comparisons

    train_rows, test_rows = hh_pairs(None)
    train_rows, test_rows = train_rows[: args.max_train], test_rows[: args.max_test]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    k = args.members
    rows = {"single": [],
            f"separate ({k} models, bootstrap)": [f"train.ensemble_size={k}", "train.ensemble_bootstrap=true"],
            f"shared ({k} heads, one backbone, bootstrap)": [
                f"train.ensemble_size={k}", "train.ensemble_bootstrap=true", "train.ensemble_shared_backbone=true"]}
    results = {}
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix="bench-ensembles-") as tmp:
        work = Path(tmp)
        train_file = write(train_rows, work / "train.jsonl")
        test, _ = load_comparisons(str(write(test_rows, work / "test.jsonl")), DataConfig())
        for name, extra in rows.items():
            print(f"--- {name}", flush=True)
            results[name] = run_row(name.split(" ")[0], extra, train_file, test, work, args)
    lines = [f"HH-RLHF harmless-base: {len(train_rows)} training / {len(test)} held-out pairs; {args.backbone}, "
             f"max_length {args.max_length}, {args.epochs:g} epoch(s), batch {args.batch_size}, seed {args.seed}", "",
             "| model | accuracy | mean member accuracy | spread AUROC for errors | accuracy, most uncertain 25 % "
             "set aside | train s | scoring s |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        auroc = r.get("std_auroc_for_errors")
        aside = r.get("accuracy_without_most_uncertain_25pct")
        lines.append(f"| {name} | {r['accuracy']:.3f} | {np.mean(r['member_accuracy']):.3f} | "
                     f"{'–' if auroc is None else f'{auroc:.3f}'} | {'–' if aside is None else f'{aside:.3f}'} | "
                     f"{r['train_s']:.0f} | {r['score_s']:.1f} |")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"args": {k_: str(v) for k_, v in vars(args).items()}, "rows": results,
                                    "printed": lines}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
