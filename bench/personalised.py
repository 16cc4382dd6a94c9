"""Personalised reward models on LLMFAO crowd judgements: do per-worker rewards beat one population reward?

    python bench/personalised.py                        # every training judgement, max_length 256: hours on CPU
    nice -n 10 python bench/personalised.py --max-length 64 --max-train 500 --fewshot-workers 3 --adapt-steps 12
                                                        # the recorded run: 29 min on 2 busy CPU cores
    python bench/personalised.py --max-rows 300 --max-train 120 --max-length 64 --fewshot-workers 2 \
        --adapt-steps 5 --min-test 3                    # a 2-minute smoke run

Data: ``../shared/data/llmfao`` (CC BY 4.0, read in place) through ``bench/llmfao_data.py``, ties and
pairs with an empty response left out: 4,929 judgements by 124 workers of 1,681 pair ids; pair ids with the same
texts share one group (1,567) and a worker's repeated identical judgement is dropped, leaving 4,813. Every model is
the ``minilm`` backbone trained for the same epochs, batch size, learning rates and ``max_length``;
only ``model.personalization`` differs. Three parts:

1. *New judgements of known people*: pairs are split by pair id (all judgements of a pair on one
   side; ``split_by_group(split_by="group")``), so a worker appears on both sides. Rows: population
   (``none``), ``tokens``, ``embedding``, ``lowrank``, each judging a test judgement with its worker's
   reward (the population reward for workers without parameters), and a reference row: the majority
   of the *other* workers' votes on the same pair (leave-one-out). A judgement whose pair no other
   test worker judged, or whose other votes tie, has no majority: the table gives that row both
   ways, over the judgements it covers (with every model's accuracy on that same subset), and over
   all judgements with a missing majority counted 0.5.
2. *Which workers gain*: per-worker gain of the best personalised mode (by overall test accuracy:
   chosen on the test set, so an optimistic pick) over the population model, for workers with at
   least ``--min-test`` test judgements; counts of gain / lose / equal, mean gain with a bootstrap
   95 % interval over workers, rank correlations of the gain with the worker's training judgements
   and with their agreement with the majority, and a sorted bar plot (``gain_by_worker.png``).
3. *Few-shot onboarding of new people*: workers are held out whole (``split_by="labeler"``), a
   personalised model is trained on the rest, and for k = 5, 10, 20, 50 of a held-out worker's
   judgements (a seeded random choice) ``rewardlab.train.adapt`` learns only that worker's parameters;
   accuracy on the worker's remaining judgements is compared with the same model's population reward
   on the same judgements, averaged over held-out workers with at least k + 10 judgements. The held-out
   workers' *pairs* may have been judged by training workers (only the people are new).

Everything printed goes to ``<out>/results.json`` too. Training runs with no evaluation split
(``data.eval_fraction=0``), so the saved model is the last one and the test set picks nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from llmfao_data import load_llmfao, write_jsonl  # noqa: E402

LLMFAO = ROOT.parent / "shared" / "data" / "llmfao"
MODES = ("none", "tokens", "embedding", "lowrank")
PERSONAL = MODES[1:]
KS = (5, 10, 20, 50)


# ----------------------------------------------------------------------------- data


def merge_duplicate_pairs(rows: list[dict]) -> list[dict]:
    """Give pair ids that hold the same prompt and two texts (models that answered identically) one group, so a
    split never puts the same texts on both sides, and drop a worker's repeated identical judgement of them
    (rewardlab rejects duplicate pairs); prints both counts."""
    canonical: dict[tuple, str] = {}
    seen, out, merged = set(), [], set()
    for r in rows:
        texts = (r["prompt"], *sorted((r["response_a"], r["response_b"])))
        group = canonical.setdefault(texts, r["group"])
        if group != r["group"]:
            merged.add(r["group"])
        chosen, rejected = (r["response_a"], r["response_b"]) if r["winner"] == "a" else (r["response_b"], r["response_a"])
        key = (r["prompt"], chosen, rejected, r["labeler"])
        if key not in seen:
            seen.add(key)
            out.append(dict(r, group=group))
    print(f"data: {len(merged)} pair ids repeat another id's texts and join its group; "
          f"{len(rows) - len(out)} repeated judgements (same worker, texts and winner) dropped")
    return out


def load_rows_and_comparisons(root: Path, work: Path, max_rows: int | None, seed: int):
    """The ab rows (ties and empty responses left out) and their comparisons, one per row, in the same order."""
    from rewardlab.config import DataConfig
    from rewardlab.data.load import load_comparisons

    rows = merge_duplicate_pairs(load_llmfao(root, ties=False, skip_empty=True))
    if max_rows is not None and max_rows < len(rows):  # a seeded subset of pairs, for quick runs
        pairs = sorted({r["group"] for r in rows})
        keep, n = set(), 0
        for i in np.random.default_rng(seed).permutation(len(pairs)):
            if n >= max_rows:
                break
            keep.add(pairs[i])
            n += sum(r["group"] == pairs[i] for r in rows)
        rows = [r for r in rows if r["group"] in keep]
    path = write_jsonl(rows, work / "all.jsonl")
    comparisons, _ = load_comparisons(str(path), DataConfig(format="ab"))
    if len(comparisons) != len(rows) or any(c.labeler != r["labeler"] or c.group != r["group"]
                                            for c, r in zip(comparisons, rows)):
        raise RuntimeError("load_comparisons did not return one comparison per row in order")
    return rows, comparisons


def split(rows: list[dict], comparisons: list, fraction: float, split_by: str, seed: int):
    """(train rows, test rows, test comparisons): ``split_by_group`` on the comparisons, mapped back to rows."""
    from rewardlab.data.splits import split_by_group

    _, test = split_by_group(comparisons, fraction, split_by=split_by, seed=seed)
    held = {id(c) for c in test}
    train_rows = [r for r, c in zip(rows, comparisons) if id(c) not in held]
    test_rows = [r for r, c in zip(rows, comparisons) if id(c) in held]
    return train_rows, test_rows, [c for c in comparisons if id(c) in held]


def loo_majority(train_rows: list[dict], test_rows: list[dict]) -> np.ndarray:
    """Per test judgement: 1 / 0 when the other test workers' majority on its pair agrees / disagrees, nan when
    no other worker judged the pair or their votes tie. (All judgements of a pair are test judgements.)"""
    votes = defaultdict(Counter)
    for r in test_rows:
        votes[r["group"]][r["winner"]] += 1
    out = np.full(len(test_rows), np.nan)
    for i, r in enumerate(test_rows):
        other = votes[r["group"]].copy()
        other[r["winner"]] -= 1
        a, b = other["a"], other["b"]
        if a != b:
            out[i] = float(("a" if a > b else "b") == r["winner"])
    return out


# ----------------------------------------------------------------------------- models


def train_model(mode: str, train_file: Path, out: Path, args) -> tuple[Path, dict, float]:
    """Train one mode on ``train_file`` with the shared budget; (model folder, metrics, seconds)."""
    from rewardlab.config import load_config
    from rewardlab.train.run import train

    overrides = [f"data.train={train_file}", "data.format=ab", "data.eval_fraction=0",
                 f"data.max_length={args.max_length}", f"model.backbone={args.backbone}",
                 "model.dropout=-1",  # MiniLM's own dropout, as the README table was measured
                 f"model.personalization={mode}", f"model.min_labeler_pairs={args.min_labeler_pairs}",
                 f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
                 f"train.lr_backbone={args.lr_backbone}", f"train.lr_head={args.lr_head}",
                 f"train.seed={args.seed}", f"train.output_dir={out}", "train.progress=false", "train.log_with=[]",
                 "train.schedule=cosine"]  # the default when the README table was measured
    start = time.perf_counter()
    result = train(load_config(None, overrides))
    return result.model_dir, result.metrics, time.perf_counter() - start


def correct(rm, comparisons: list, *, population: bool = False) -> np.ndarray:
    """1 / 0 per comparison (its single judgement): the reward (the worker's own, or the population's) agrees."""
    if population:
        comparisons = [dataclasses.replace(c, labeler=None) for c in comparisons]
    judged = rm.judge(comparisons)
    return np.array([1.0 if j.chosen[0] > j.rejected[0] else 0.5 if j.chosen[0] == j.rejected[0] else 0.0
                     for j in judged])


# ----------------------------------------------------------------------------- statistics


def bootstrap_mean(values: np.ndarray, clusters: np.ndarray | None = None, *, n: int = 2000, seed: int = 0):
    """Mean of ``values`` and a percentile bootstrap 95 % interval (resampling ``clusters`` whole when given)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if clusters is None:
        means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    else:
        _, inverse = np.unique(clusters, return_inverse=True)
        sums, counts = np.bincount(inverse, values), np.bincount(inverse)
        pick = rng.integers(0, len(sums), (n, len(sums)))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(x) > 2 else float("nan")


def per_worker(workers: list[str], values: np.ndarray) -> dict[str, tuple[float, int]]:
    """worker -> (mean of values, count), ignoring nan."""
    out = {}
    for w in sorted(set(workers)):
        v = values[[i for i, u in enumerate(workers) if u == w]]
        v = v[~np.isnan(v)]
        out[w] = (float(v.mean()) if len(v) else float("nan"), int(len(v)))
    return out


def pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f}"


# ----------------------------------------------------------------------------- parts


def part_known_workers(rows, comparisons, work: Path, args) -> dict:
    from rewardlab.scoring import RewardModel

    train_rows, test_rows, test_comps = split(rows, comparisons, args.test_fraction, "group", args.seed)
    if args.max_train is not None and len(train_rows) > args.max_train:
        pick = np.random.default_rng(args.seed).permutation(len(train_rows))[: args.max_train]
        train_rows = [train_rows[i] for i in sorted(pick)]
    train_file = write_jsonl(train_rows, work / "known" / "train.jsonl")
    workers = [r["labeler"] for r in test_rows]
    groups = np.array([r["group"] for r in test_rows])
    train_counts = Counter(r["labeler"] for r in train_rows)
    majority = loo_majority(train_rows, test_rows)
    covered = ~np.isnan(majority)
    print(f"\npart 1: {len(train_rows)} train / {len(test_rows)} test judgements "
          f"({len({r['group'] for r in train_rows})} / {len(set(groups))} pairs); "
          f"{len(set(workers))} test workers, {len(set(workers) & set(train_counts))} of them seen in training; "
          f"leave-one-out majority for {int(covered.sum())} test judgements", flush=True)

    results = {}
    for mode in MODES:
        model_dir, metrics, seconds = train_model(mode, train_file, work / "known" / mode, args)
        rm = RewardModel.from_pretrained(str(model_dir), device="cpu")
        ok = correct(rm, test_comps)
        results[mode] = {"correct": ok, "seconds": seconds, "labelers": metrics["data"].get("labelers"),
                         "truncated": metrics["data"]["truncated_sequences"]}
        print(f"  {mode}: accuracy {pct(ok.mean())} in {seconds:.0f} s", flush=True)
    results["majority"] = {"correct": majority}

    # ---- table 1: overall
    table = []
    for name, r in results.items():
        ok = r["correct"]
        filled = np.where(np.isnan(ok), 0.5, ok)
        acc, low, high = bootstrap_mean(filled, groups, seed=args.seed)
        workers_acc = per_worker(workers, ok)
        big = [a for w, (a, n) in workers_acc.items() if n >= args.min_test]
        table.append({"row": "population (none)" if name == "none" else
                      "leave-one-out majority" if name == "majority" else name,
                      "accuracy": acc, "ci95": [low, high], "on_majority_subset": float(np.nanmean(ok[covered])),
                      "worker_mean": float(np.mean(big)) if big else float("nan"), "workers": len(big),
                      "personal_labelers": (r.get("labelers") or {}).get("personal", 0) if name != "majority" else None,
                      "seconds": r.get("seconds"), "per_worker": workers_acc})
    print(f"\n### New judgements of known workers ({len(test_rows)} test judgements, split by pair id)\n")
    print(f"| model | accuracy (95% CI, pair bootstrap) | on the {int(covered.sum())} with a majority | "
          f"mean over workers with >= {args.min_test} test | workers with own parameters | train s |")
    print("|---|---|---|---|---|---|")
    for t in table:
        people = "—" if t["personal_labelers"] is None else t["personal_labelers"]
        secs = "—" if t["seconds"] is None else f"{t['seconds']:.0f}"
        print(f"| {t['row']} | {pct(t['accuracy'])} ({pct(t['ci95'][0])}–{pct(t['ci95'][1])}) | "
              f"{pct(t['on_majority_subset'])} | {pct(t['worker_mean'])} ({t['workers']}) | {people} | {secs} |")
    print("\n(majority: accuracy counts a missing or tied majority as 0.5; the next column leaves those out.)")

    # ---- table 2: per worker
    big = sorted((w for w, n in Counter(workers).items() if n >= args.min_test), key=lambda w: -Counter(workers)[w])
    print(f"\n### Per-worker test accuracy (workers with >= {args.min_test} test judgements)\n")
    print("| worker | train | test | " + " | ".join(t["row"] for t in table) + " |")
    print("|---|---|---|" + "---|" * len(table))
    for w in big:
        print(f"| {w} | {train_counts[w]} | {Counter(workers)[w]} | "
              + " | ".join(pct(t["per_worker"][w][0]) for t in table) + " |")

    # ---- part 2: which workers gain
    best = max(PERSONAL, key=lambda m: results[m]["correct"].mean())
    diff = results[best]["correct"] - results["none"]["correct"]
    d_mean, d_low, d_high = bootstrap_mean(diff, groups, seed=args.seed)
    agree = per_worker(workers, majority)
    best_acc, pop_acc = per_worker(workers, results[best]["correct"]), per_worker(workers, results["none"]["correct"])
    gains = {w: best_acc[w][0] - pop_acc[w][0] for w in big}
    g = np.array([gains[w] for w in big])
    g_mean, g_low, g_high = bootstrap_mean(g, seed=args.seed)
    counts = {"gain": int((g > 1e-9).sum()), "lose": int((g < -1e-9).sum()), "equal": int((np.abs(g) <= 1e-9).sum())}
    rho_train = spearman([train_counts[w] for w in big], g)
    rho_agree = spearman([agree[w][0] for w in big if agree[w][1]], [gains[w] for w in big if agree[w][1]])
    print(f"\n### Which workers gain: {best} vs population\n")
    print(f"- over all {len(diff)} test judgements: {100 * d_mean:+.1f} points "
          f"(95% CI {100 * d_low:+.1f} to {100 * d_high:+.1f}, bootstrap over pairs)")
    print(f"- {len(big)} workers with >= {args.min_test} test judgements: {counts['gain']} gain, {counts['lose']} lose, "
          f"{counts['equal']} equal; mean gain {100 * g_mean:+.1f} points "
          f"(95% CI {100 * g_low:+.1f} to {100 * g_high:+.1f}, bootstrap over workers); "
          f"median {100 * float(np.median(g)) if len(g) else float('nan'):+.1f}")
    print(f"- Spearman correlation of the gain with the worker's training judgements: {rho_train:+.2f}; "
          f"with their agreement with the leave-one-out majority: {rho_agree:+.2f}")
    plot_gains(big, g, best, args.out / "gain_by_worker.png", args.min_test)
    return {"train_judgements": len(train_rows), "test_judgements": len(test_rows),
            "test_pairs": len(set(groups)), "majority_covered": int(covered.sum()),
            "table": [{k: v for k, v in t.items()} for t in table],
            "truncated": {m: results[m]["truncated"] for m in MODES},
            "best_mode": best, "overall_gain": [d_mean, d_low, d_high],
            "worker_gains": {w: {"gain": gains[w], "train": train_counts[w], "test": Counter(workers)[w],
                                 "majority_agreement": agree[w][0]} for w in big},
            "gain_counts": counts, "mean_gain": [g_mean, g_low, g_high],
            "spearman_gain_train": rho_train, "spearman_gain_majority_agreement": rho_agree}


def plot_gains(workers: list[str], gains: np.ndarray, mode: str, path: Path, min_test: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(gains)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(workers)), 4))
    ax.bar(range(len(order)), 100 * gains[order], color=["tab:green" if x > 0 else "tab:red" for x in gains[order]])
    ax.set_xticks(range(len(order)), [workers[i].removeprefix("worker") for i in order], rotation=90, fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(f"worker (>= {min_test} test judgements), sorted by gain")
    ax.set_ylabel(f"{mode} - population accuracy (points)")
    ax.set_title("LLMFAO: per-worker gain of the personalised reward")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_new_workers(rows, comparisons, mode: str, work: Path, args) -> dict:
    from rewardlab.train.adapt import adapt
    from rewardlab.config import DataConfig
    from rewardlab.scoring import RewardModel

    train_rows, held_rows, held_comps = split(rows, comparisons, args.heldout_fraction, "labeler", args.seed)
    if args.max_train is not None and len(train_rows) > args.max_train:
        pick = np.random.default_rng(args.seed).permutation(len(train_rows))[: args.max_train]
        train_rows = [train_rows[i] for i in sorted(pick)]
    by_worker = defaultdict(list)
    for r, c in zip(held_rows, held_comps):
        by_worker[r["labeler"]].append((r, c))
    eligible = sorted((w for w, v in by_worker.items() if len(v) >= KS[0] + 10), key=lambda w: -len(by_worker[w]))
    eligible = eligible[: args.fewshot_workers]
    print(f"\npart 3: {len(train_rows)} training judgements of {len({r['labeler'] for r in train_rows})} workers; "
          f"{len(by_worker)} held-out workers ({len(held_rows)} judgements), {len(eligible)} used "
          f"(>= {KS[0] + 10} judgements, most first); mode {mode}", flush=True)
    model_dir, _, seconds = train_model(mode, write_jsonl(train_rows, work / "new" / "train.jsonl"),
                                        work / "new" / mode, args)
    base = RewardModel.from_pretrained(str(model_dir), device="cpu")
    data_cfg = DataConfig(format="ab", max_length=args.max_length)
    curve = {k: [] for k in KS}
    start = time.perf_counter()
    for w in eligible:
        items = by_worker[w]
        order = np.random.default_rng(args.seed).permutation(len(items))
        items = [items[i] for i in order]
        pop = correct(base, [c for _, c in items], population=True)
        for k in KS:
            if len(items) < k + 10:
                continue
            shots = write_jsonl([r for r, _ in items[:k]], work / "new" / f"{w}_k{k}.jsonl")
            out = work / "new" / f"adapted_{w}_k{k}"
            result = adapt(str(model_dir), str(shots), w, out, data_cfg=data_cfg, steps=args.adapt_steps,
                           lr=args.adapt_lr)
            adapted = correct(RewardModel.from_pretrained(str(out), device="cpu"), [c for _, c in items[k:]])
            shutil.rmtree(out, ignore_errors=True)
            curve[k].append({"worker": w, "test": len(items) - k, "adapted": float(adapted.mean()),
                             "population": float(pop[k:].mean()), "fit_after": result.accuracy_after,
                             "seconds": result.seconds})
        print(f"  {w} ({len(items)} judgements): " + ", ".join(
            f"k={k} {pct(e['adapted'])} vs {pct(e['population'])}" for k in KS for e in curve[k] if e["worker"] == w),
            flush=True)
    summary = []
    for k in KS:
        gain = np.array([e["adapted"] - e["population"] for e in curve[k]])
        m, low, high = bootstrap_mean(gain, seed=args.seed)
        summary.append({"k": k, "workers": len(curve[k]),
                        "adapted": float(np.mean([e["adapted"] for e in curve[k]])) if curve[k] else float("nan"),
                        "population": float(np.mean([e["population"] for e in curve[k]])) if curve[k] else float("nan"),
                        "gain": m, "ci95": [low, high], "wins": int((gain > 1e-9).sum()),
                        "losses": int((gain < -1e-9).sum())})
    print(f"\n### Few-shot onboarding of held-out workers ({mode}; adapt {args.adapt_steps} steps, lr {args.adapt_lr})\n")
    print("| k | workers (>= k+10 judgements) | adapted accuracy | population accuracy | gain (95% CI over workers) "
          "| workers gain / lose |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['k']} | {s['workers']} | {pct(s['adapted'])} | {pct(s['population'])} | "
              f"{100 * s['gain']:+.1f} ({100 * s['ci95'][0]:+.1f} to {100 * s['ci95'][1]:+.1f}) | "
              f"{s['wins']} / {s['losses']} |")
    print("\n(mean over workers of accuracy on each worker's judgements left after its k shots)")
    return {"mode": mode, "train_judgements": len(train_rows), "heldout_workers": len(by_worker),
            "heldout_judgements": len(held_rows), "workers_used": eligible, "train_seconds": seconds,
            "adapt_seconds": time.perf_counter() - start, "curve": summary, "per_worker": curve}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=LLMFAO, help="the llmfao data folder")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_personalised")
    parser.add_argument("--max-rows", type=int, default=None, help="use a seeded subset of pairs with about this "
                        "many judgements (quick runs)")
    parser.add_argument("--max-train", type=int, default=None, help="cap each training set at this many judgements")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of judgements held out, by pair id")
    parser.add_argument("--heldout-fraction", type=float, default=0.25, help="part 3: share of judgements held out, "
                        "by worker")
    parser.add_argument("--min-test", type=int, default=10, help="workers with at least this many test judgements "
                        "enter the per-worker mean, table and gains")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr-backbone", type=float, default=2e-5)
    parser.add_argument("--lr-head", type=float, default=1e-4)
    parser.add_argument("--min-labeler-pairs", type=int, default=5)
    parser.add_argument("--fewshot-mode", default="embedding", choices=("auto", *PERSONAL),
                        help="part 3's personalisation (auto: part 1's best; tokens makes adapt back-propagate "
                        "through the backbone, several times slower than embedding / lowrank)")
    parser.add_argument("--fewshot-workers", type=int, default=12, help="part 3: at most this many held-out workers "
                        "(those with the most judgements)")
    parser.add_argument("--adapt-steps", type=int, default=40)
    parser.add_argument("--adapt-lr", type=float, default=0.05)
    parser.add_argument("--skip-fewshot", action="store_true")
    parser.add_argument("--keep-models", action="store_true", help="keep the trained models under <out>/work")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.root / "crowd-comparisons.csv").is_file():
        raise SystemExit(f"error: no LLMFAO data at {args.root} (crowd-comparisons.csv); pass --root")

    import torch

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    work = args.out / "work"
    rows, comparisons = load_rows_and_comparisons(args.root, work, args.max_rows, args.seed)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings.update(judgements=len(rows), workers=len({r["labeler"] for r in rows}),
                    pairs=len({r["group"] for r in rows}), torch=torch.__version__, threads=torch.get_num_threads(),
                    python=platform.python_version(), machine=platform.machine())
    print("### Settings\n")
    for k in ("judgements", "workers", "pairs", "backbone", "epochs", "batch_size", "max_length", "lr_backbone",
              "lr_head", "min_labeler_pairs", "test_fraction", "heldout_fraction", "max_train", "min_test",
              "adapt_steps", "adapt_lr", "seed", "threads"):
        print(f"- {k}: {settings[k]}")
    out = {"settings": settings, "known_workers": part_known_workers(rows, comparisons, work, args)}
    if not args.skip_fewshot:
        mode = out["known_workers"]["best_mode"] if args.fewshot_mode == "auto" else args.fewshot_mode
        out["new_workers"] = part_new_workers(rows, comparisons, mode, work, args)
    out["seconds"] = time.perf_counter() - start
    if not args.keep_models:
        shutil.rmtree(work, ignore_errors=True)
    path = args.out / "results.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"\ntotal {out['seconds'] / 60:.1f} min; wrote {path} and {args.out / 'gain_by_worker.png'}")


if __name__ == "__main__":
    main()
