"""Reward models that learn the preference, not the length: plain Bradley–Terry vs each debiasing option.

    python bench/length_bias.py --data hh                # the README table: every row, 2 seeds; ~30 min on 2 cores
    python bench/length_bias.py --data llmfao --seeds 0  # LLMFAO crowd majorities
    python bench/length_bias.py --data hh --rows plain debias --seeds 0 --max-train 600    # a quick look

Data (read in place from ``../shared/data``, never copied here):

- ``hh``: HH-RLHF harmless-base dev pairs, shuffled with a fixed seed and split 80 / 20 by pair (the split of
  ``bench/compare_trl.py``): 1,447 training and 362 held-out pairs.
- ``llmfao``: LLMFAO crowd judgements reduced to one majority verdict per response pair (pairs whose crowd
  votes tie, or whose majority is "tie", are left out; so are pairs with an empty response, and repeats of
  the same two texts under another pair id), split 80 / 20 by pair with a fixed seed.

Rows, all with the same backbone, budget (epochs, batch, learning rates, schedule, max_length), dropout (off
unless ``--dropout``) and seeds:

- ``plain``: Bradley–Terry;
- ``debias``: ``train.debias=[length]``, a disentangled reward (a frozen length-only BT reward beside the
  quality reward; the quality reward is what is evaluated), ``train.debias_weight`` = ``--debias-weight``;
- ``matched``: ``train.length_matched=true``, batches with as many longer-won as shorter-won pairs;
- ``penalty``: ``train.length_penalty`` = ``--length-penalty``, the squared slope of margins on log-length
  gaps;
- ``length rule``: no model, the length-only rule that fits the training pairs best ("prefer the longer" or
  "prefer the shorter" reply).

Columns: held-out accuracy, length-balanced accuracy (the mean of the accuracies on pairs the longer and
the shorter reply won; 0.5 for any length-only rule), accuracy on each of those two kinds of pair, the
share of pairs where the model prefers the longer reply, the Spearman correlation of reward with length
over the held-out replies, and training time (wall, this machine).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from compare_trl import SHARED, hh_pairs  # noqa: E402

ROWS = {"plain": [], "debias": ["train.debias=[length]"], "matched": ["train.length_matched=true"],
        "penalty": []}


def llmfao_pairs(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Crowd-majority LLMFAO pairs (ties and empty responses left out), split 80 / 20 by pair."""
    from llmfao_data import load_llmfao

    votes: dict[str, Counter] = defaultdict(Counter)
    rows: dict[str, dict] = {}
    for r in load_llmfao(SHARED / "llmfao", ties=True, skip_empty=True):
        votes[r["group"]][r["winner"]] += 1
        rows[r["group"]] = r
    pairs, seen = [], set()
    for group, count in votes.items():
        (top, n), *rest = count.most_common()
        if top == "tie" or (rest and rest[0][1] == n):
            continue
        r = rows[group]
        chosen, rejected = (r["response_a"], r["response_b"]) if top == "a" else (r["response_b"], r["response_a"])
        key = (r["prompt"], *sorted((chosen, rejected)))  # some pair ids hold the same two texts: keep one
        if chosen != rejected and key not in seen:
            seen.add(key)
            pairs.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    pairs.sort(key=lambda p: (p["prompt"], p["chosen"], p["rejected"]))
    random.Random(seed).shuffle(pairs)
    cut = int(0.8 * len(pairs))
    return pairs[:cut], pairs[cut:]


def write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def length_metrics(chosen: np.ndarray, rejected: np.ndarray, chosen_len: np.ndarray, rejected_len: np.ndarray
                   ) -> dict:
    """Accuracy, length-balanced accuracy and friends from per-pair rewards and lengths."""
    from rewardlab.metrics.pairwise import length_balanced_accuracy
    from scipy.stats import spearmanr

    margin, diff = chosen - rejected, chosen_len - rejected_len
    rewards, lengths = np.concatenate([chosen, rejected]), np.concatenate([chosen_len, rejected_len])
    prefers_longer = np.where(diff > 0, margin > 0, margin < 0)[diff != 0]
    return {"accuracy": float((margin > 0).mean()),
            "length_balanced_accuracy": length_balanced_accuracy(margin, diff),
            "longer_won_accuracy": float((margin[diff > 0] > 0).mean()),
            "shorter_won_accuracy": float((margin[diff < 0] > 0).mean()),
            "prefers_longer": float(prefers_longer.mean()),
            "reward_length_spearman": float(spearmanr(rewards, lengths).statistic)}


def run_row(name: str, extra: list[str], train_file: Path, test: list[dict], work: Path, args, seed: int) -> dict:
    from rewardlab.config import load_config
    from rewardlab.scoring import RewardModel
    from rewardlab.train.run import train

    cfg = load_config(None, [
        f"model.backbone={args.backbone}", f"data.train={train_file}", "data.eval_fraction=0",
        f"data.max_length={args.max_length}", f"train.output_dir={work / name}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"train.lr_backbone={args.lr}", f"train.schedule={args.schedule}",
        f"train.seed={seed}", "train.progress=false", "train.log_with=[]", f"model.dropout={args.dropout}",
        *args.set, *extra])
    start = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - start
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    prompts = [p["prompt"] for p in test]
    chosen = np.asarray(rm.score_batch(prompts, [p["chosen"] for p in test]))
    rejected = np.asarray(rm.score_batch(prompts, [p["rejected"] for p in test]))
    return {"train_s": train_s, **length_metrics(chosen, rejected, *lengths_of(test))}


def lengths_of(pairs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray([len(p["chosen"]) for p in pairs], dtype=float),
            np.asarray([len(p["rejected"]) for p in pairs], dtype=float))


def length_rule(train_rows: list[dict], test: list[dict]) -> dict:
    """The length-only rule that fits the training pairs best, scored like a model (reward = ±length)."""
    c, r = lengths_of(train_rows)
    sign = 1.0 if (c > r).sum() >= (c < r).sum() else -1.0
    c_t, r_t = lengths_of(test)
    return {"train_s": 0.0, "rule": "prefer the longer" if sign > 0 else "prefer the shorter",
            **length_metrics(sign * c_t, sign * r_t, c_t, r_t)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["hh", "llmfao"], choices=["hh", "llmfao"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--max-train", type=int, help="use at most this many training pairs")
    parser.add_argument("--max-test", type=int, help="use at most this many held-out pairs")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4, help="backbone learning rate (the head keeps its default)")
    parser.add_argument("--schedule", default="linear")
    parser.add_argument("--dropout", type=float, default=0.0, help="model.dropout (-1: MiniLM's own, 0.1)")
    parser.add_argument("--debias-weight", type=float, default=1.0, help="train.debias_weight of the debias row")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="training seeds; the table shows each row's mean over them (the split stays fixed)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every row (e.g. model.dropout=0)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_length_bias.json"))
    args = parser.parse_args(argv)
    for name in args.data:
        folder = SHARED / ("hh-rlhf" if name == "hh" else "llmfao")
        if not folder.is_dir():
            print(f"{folder} is missing: this benchmark reads its data from ../shared/data", file=sys.stderr)
            return 2
    rows = {**ROWS, "debias": ROWS["debias"] + [f"train.debias_weight={args.debias_weight}"],
            "penalty": [f"train.length_penalty={args.length_penalty}"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    lines = []
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix="bench-length-") as tmp:
        for data in args.data:
            train_rows, test = hh_pairs(None) if data == "hh" else llmfao_pairs()
            train_rows, test = train_rows[: args.max_train], test[: args.max_test]
            work = Path(tmp) / data
            work.mkdir()
            train_file = write(train_rows, work / "train.jsonl")
            results[data] = {}
            for name in args.rows:
                per_seed = []
                for seed in args.seeds:
                    print(f"--- {data}: {name}, seed {seed}", flush=True)
                    per_seed.append(run_row(f"{name}-{seed}", rows[name], train_file, test, work, args, seed))
                    print(json.dumps(per_seed[-1]), flush=True)
                results[data][name] = {**{k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]},
                                       "per_seed": per_seed}
            results[data]["length rule"] = length_rule(train_rows, test)
            lines += [f"**{data}**: {len(train_rows)} training / {len(test)} held-out pairs; {args.backbone}, "
                      f"max_length {args.max_length}, {args.epochs:g} epoch(s), batch {args.batch_size}, "
                      f"lr {args.lr:g} {args.schedule}, dropout {args.dropout:g}; "
                      f"mean over seeds {', '.join(map(str, args.seeds))}"
                      + (f", {' '.join(args.set)}" if args.set else ""), "",
                      "| row | accuracy | length-balanced | longer won | shorter won | prefers longer | "
                      "reward–length ρ | train s |", "|---|---|---|---|---|---|---|---|"]
            for name, r in results[data].items():
                label = f"length rule ({r['rule']})" if name == "length rule" else name
                lines.append(f"| {label} | {r['accuracy']:.3f} | {r['length_balanced_accuracy']:.3f} | "
                             f"{r['longer_won_accuracy']:.3f} | {r['shorter_won_accuracy']:.3f} | "
                             f"{r['prefers_longer']:.2f} | {r['reward_length_spearman']:+.2f} | {r['train_s']:.0f} |")
            lines.append("")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                    "printed": lines}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
