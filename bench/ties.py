"""A / B / tie prediction on LLMFAO crowd judgements: baselines, LLM judges, tie-aware reward models, GPT-4.

    python bench/ties.py                                   # defaults: ~23 min on 2 CPU cores
    python bench/ties.py --max-train 200 --max-test 100 --judge-max-train 40 --max-length 128  # a smoke run

Data: ``../shared/data/llmfao`` (CC BY 4.0, read in place) through ``bench/llmfao_data.py`` with
``skip_empty=True``: the 1,208 crowd judgements of a pair with a whitespace-only response are left out,
and the loader's duplicates (a worker judging the same texts twice under two pair ids) are skipped and
counted. The rest is split by pair id (``group``; all judgements of a pair on one side), stratified by
outcome (``stratified_group_split``, one fold of ``round(1 / test_fraction)``). Train and test are then
cut to ``--max-train`` / ``--max-test`` judgements by taking *whole pairs* in a seeded random order (a
pair's ~4 judgements share their texts). The trainer sorts each mega-batch of 50 x batch size
comparisons by their longest item, and equal lengths (common: items cut at max_length) by a digest of
their texts, so a pair's judgements share a batch and its texts go through the model once per step
where the batch has room for them (it holds only when the mega-batch has all of them: ``--max-train``
<= 50 x ``--batch-size``, or the judge's 96 <= 50 x 4).

Rows, all on the same test judgements:

- uniform: 1/3 each (ln 3 = 1.0986); class prior: the outcome frequencies of the whole training split.
- zero-shot judge: SmolLM2-135M-Instruct reading the judge template, next-token logits of A / B / C.
- fine-tuned judge: the same LM with LoRA, ``train.loss=three_class``, on ``--judge-max-train`` training
  judgements (whole pairs drawn from the MiniLM rows' training set; a small subset on a CPU, see above).
- tie-aware BT: MiniLM text reward model, ``train.loss=davidson`` (ties through the learned nu).
- 3-class cross-encoder: MiniLM reading prompt, A and B, three logits (``model.kind=cross_encoder``).
- GPT-4: its one judgement per pair (``gpt4-crowd-comparisons.csv``) as a one-hot prediction, clipped to
  (1 - 2 eps, eps, eps) with ``--gpt4-eps`` for the log-loss; and the same verdict calibrated on the
  training split (P(crowd outcome | GPT-4 verdict), add-one smoothed). Reference rows, not rewardlab models.

Pairwise models (judges, cross-encoder) are scored on each order alone: softmax of the (A, B) item's
logits and of the (B, A) item's logits. Their predictions in the table are the mean of the two, which is
what ``RewardModel.compare`` / ``judge`` return (checked on a few pairs); position consistency is the
share of test judgements whose argmax outcome is the same from the single order (A, B) as from the
single order (B, A) (the averaged prediction is consistent by construction). The BT model scores each
response alone, so it is consistent by construction too. Train time is the wall time of ``train(cfg)``
(loading, encoding, the loop, a pass over the training set for reward statistics, saving); inference
time is scoring the test pairs in both orders, model already loaded. Timings are from a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from llmfao_data import load_llmfao, load_llmfao_gpt4, write_jsonl  # noqa: E402

LLMFAO = ROOT.parent / "shared" / "data" / "llmfao"
LABEL = {"a": 0, "b": 1, "tie": 2}
MODELS = ("zero_shot", "judge", "davidson", "cross_encoder")
EPS = 1e-12  # outcome_metrics' own clip


# ----------------------------------------------------------------------------- data


def take_pairs(comparisons: list, limit: int | None, seed: int) -> list:
    """Whole pairs (``group``) in a seeded random order until ``limit`` judgements; input order kept."""
    if limit is None or limit >= len(comparisons):
        return list(comparisons)
    groups = sorted({c.group for c in comparisons})
    chosen, count, sizes = set(), 0, {}
    for c in comparisons:
        sizes[c.group] = sizes.get(c.group, 0) + 1
    for k in np.random.default_rng(seed).permutation(len(groups)):
        if count + sizes[groups[k]] > limit and count:
            continue
        chosen.add(groups[k])
        count += sizes[groups[k]]
    return [c for c in comparisons if c.group in chosen]


def labels_of(comparisons: list) -> np.ndarray:
    return np.array([LABEL[c.meta["outcome"]] for c in comparisons])


def load_data(args: argparse.Namespace, work: Path) -> dict:
    from rewardlab.config import DataConfig
    from rewardlab.data.load import load_comparisons
    from rewardlab.data.splits import stratified_group_split

    rows = load_llmfao(args.root, skip_empty=True)
    path = write_jsonl(rows, work / "crowd.jsonl")
    comparisons, report = load_comparisons(str(path), DataConfig(format="ab", on_bad_row="skip"))
    row_of = {id(c): int(c.source.rsplit(":", 1)[1]) - 1 for c in comparisons}  # jsonl lines count from 1
    train, test = stratified_group_split(comparisons, args.test_fraction, split_by="group", seed=args.seed)
    full_train = train
    train = take_pairs(train, args.max_train, args.seed)
    test = take_pairs(test, args.max_test, args.seed)
    judge_train = take_pairs(train, args.judge_max_train, args.seed + 1)
    files = {}
    for name, part in (("train", train), ("judge_train", judge_train)):
        files[name] = write_jsonl([rows[row_of[id(c)]] for c in part], work / f"{name}.jsonl")
    gpt4 = {r["group"]: LABEL[r["winner"]] for r in load_llmfao_gpt4(args.root)}
    return {"train": train, "test": test, "full_train": full_train, "judge_train": judge_train, "files": files,
            "gpt4": gpt4, "loaded": len(rows), "skipped": report.skipped, "comparisons": len(comparisons)}


def describe(part: list) -> str:
    labels = labels_of(part)
    shares = np.bincount(labels, minlength=3) / max(len(labels), 1)
    return (f"{len(part)} judgements / {len({c.group for c in part})} pairs "
            f"(a {shares[0]:.1%}, b {shares[1]:.1%}, tie {shares[2]:.1%})")


# ----------------------------------------------------------------------------- models


def train_model(overrides: list[str], data: Path, out: Path, args: argparse.Namespace) -> tuple[Path, float]:
    from rewardlab.config import load_config
    from rewardlab.train.run import train

    cfg = load_config(None, [
        f"data.train={data}", "data.format=ab", "data.eval_fraction=0", "data.split_by=group",
        f"train.output_dir={out}", f"train.seed={args.seed}", "train.progress=false", "train.log_with=[]",
        "train.save_model=true",
        "train.schedule=cosine",  # the default when the README table was measured
        *overrides])
    start = time.perf_counter()
    result = train(cfg)
    return result.model_dir, time.perf_counter() - start


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def pairwise_predictions(rm, test: list, batch_size: int) -> dict:
    """Per test judgement (P, 3) in the (a, b, tie) frame: single order (A, B), single order (B, A) in its own
    swapped frame, and their mean (what ``judge`` / ``compare`` return)."""
    from rewardlab.evaluation.predict import ab_frame

    keys = list(dict.fromkeys((c.prompt, *c.responses) for c in test))
    start = time.perf_counter()
    logits = rm.score_heads([k[0] for k in keys] * 2, [(a, b) for _, a, b in keys] + [(b, a) for _, a, b in keys],
                            batch_size=batch_size)  # (2U, 3): first wins, second wins, tie
    seconds = time.perf_counter() - start
    ab, ba = softmax(logits[: len(keys)]), softmax(logits[len(keys):])  # (U, 3) each
    row = {k: i for i, k in enumerate(keys)}
    index = [row[(c.prompt, *c.responses)] for c in test]
    ab, ba = ab[index], ba[index]
    mean = (ab + ba[:, [1, 0, 2]]) / 2
    check = test[:2]
    for k, (c, judged) in enumerate(zip(check, rm.judge(check))):  # the library's own averaged prediction
        probs, _ = ab_frame(c.pairs[0], judged.log_probs[0])
        if not np.allclose(probs, mean[k], atol=1e-4):
            raise AssertionError(f"per-order mean {mean[k]} differs from RewardModel.judge {probs}")
    return {"probs": mean, "ab": ab, "ba": ba, "infer_s": seconds}


def reward_predictions(rm, test: list, batch_size: int) -> dict:
    """A single-response model's (a, b, tie) predictions; scoring B, A gives the same rewards, so the
    swapped prediction is the same probabilities with a and b exchanged."""
    from rewardlab.evaluation.predict import ab_frame

    start = time.perf_counter()
    judged = rm.judge(test, batch_size=batch_size)
    seconds = time.perf_counter() - start
    probs = np.stack([ab_frame(c.pairs[0], j.log_probs[0])[0] for c, j in zip(test, judged)])
    return {"probs": probs, "ab": probs, "ba": probs[:, [1, 0, 2]], "infer_s": seconds,
            "outcome": rm.metadata.get("outcome")}


def run_model(name: str, data: dict, args: argparse.Namespace, work: Path) -> dict:
    from rewardlab.scoring import zero_shot_judge
    from rewardlab.scoring import RewardModel

    common = [f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr_backbone={args.lr}",
              f"train.lr_head={args.lr_head}"]
    if name == "zero_shot":
        start = time.perf_counter()
        rm = zero_shot_judge("smollm2", max_length=args.judge_max_length, device="cpu")
        out = {"train_s": None, "load_s": time.perf_counter() - start}
        return {**out, **pairwise_predictions(rm, data["test"], args.judge_batch_size)}
    if name == "judge":
        overrides = ["model.kind=judge", "model.backbone=smollm2", "train.loss=three_class", "model.lora=true",
                     f"data.max_length={args.judge_max_length}", f"train.epochs={args.judge_epochs}",
                     f"train.batch_size={args.judge_batch_size}", f"train.lr_backbone={args.judge_lr}"]
        model_dir, train_s = train_model(overrides, data["files"]["judge_train"], work / name, args)
        batch = args.judge_batch_size
    else:
        kind = ["model.kind=text", "train.loss=davidson"] if name == "davidson" else \
            ["model.kind=cross_encoder", "train.loss=three_class"]
        # MiniLM's own dropout, as the README table was measured
        overrides = [*kind, "model.backbone=minilm", "model.dropout=-1", f"data.max_length={args.max_length}",
                     f"data.max_prompt_tokens={args.max_prompt_tokens}", *common]
        model_dir, train_s = train_model(overrides, data["files"]["train"], work / name, args)
        batch = 32
    start = time.perf_counter()
    rm = RewardModel.from_pretrained(str(model_dir), device="cpu")
    out = {"train_s": train_s, "load_s": time.perf_counter() - start}
    predict = reward_predictions if name == "davidson" else pairwise_predictions
    return {**out, **predict(rm, data["test"], batch)}


# ----------------------------------------------------------------------------- reference rows


def gpt4_predictions(data: dict, eps: float) -> dict:
    """GPT-4's verdict per test judgement: one-hot clipped with ``eps``, and calibrated on the training split."""
    verdict = np.array([data["gpt4"][c.group] for c in data["test"]])
    clipped = np.full((len(verdict), 3), eps)
    clipped[np.arange(len(verdict)), verdict] = 1 - 2 * eps
    counts = np.ones((3, 3))  # add-one: rows GPT-4's verdict, columns the crowd's outcome
    for c, label in zip(data["full_train"], labels_of(data["full_train"])):
        counts[data["gpt4"][c.group], label] += 1
    calibrated = (counts / counts.sum(axis=1, keepdims=True))[verdict]
    return {"one_hot": clipped, "calibrated": calibrated, "verdict": verdict}


def per_judgement_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))


def gap_interval(loss_x: np.ndarray, loss_y: np.ndarray, groups: list, seed: int, n: int = 2000) -> list[float]:
    """95 % bootstrap interval of mean(loss_x - loss_y), resampling whole pairs (judgements of a pair correlate)."""
    keys, inverse = np.unique(groups, return_inverse=True)
    diff = np.bincount(inverse, weights=loss_x - loss_y, minlength=len(keys))
    size = np.bincount(inverse, minlength=len(keys))
    draws = np.random.default_rng(seed).integers(0, len(keys), (n, len(keys)))
    means = diff[draws].sum(1) / size[draws].sum(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=LLMFAO, help="the llmfao data folder")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_ties.json", help="JSON results")
    parser.add_argument("--seed", type=int, default=0, help="split, subsets and training seed")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--max-train", type=int, default=3000, help="training judgements of the MiniLM models")
    parser.add_argument("--max-test", type=int, default=400, help="test judgements (whole pairs), every row")
    parser.add_argument("--judge-max-train", type=int, default=96, help="training judgements of the LoRA judge")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of the MiniLM models")
    parser.add_argument("--judge-epochs", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per MiniLM sequence")
    parser.add_argument("--judge-max-length", type=int, default=256, help="tokens per judge sequence (template "
                        "included)")
    parser.add_argument("--max-prompt-tokens", type=int, default=64, help="MiniLM rows: tokens kept of a long "
                        "prompt (LLMFAO prompts have at most 63), the rest goes to the responses")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5, help="MiniLM backbone learning rate")
    parser.add_argument("--lr-head", type=float, default=1e-2, help="MiniLM rows: head (and Davidson nu) learning "
                        "rate; one short epoch needs it high for nu to reach the tie rate")
    parser.add_argument("--judge-batch-size", type=int, default=4)
    parser.add_argument("--judge-lr", type=float, default=1e-3, help="learning rate of the judge's LoRA adapters")
    parser.add_argument("--gpt4-eps", type=float, default=0.01, help="clip of GPT-4's one-hot verdicts")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if not args.root.is_dir():
        print(f"{args.root} is missing: this benchmark reads LLMFAO from ../shared/data/llmfao (or --root)",
              file=sys.stderr)
        return 2

    from rewardlab.metrics.outcomes import outcome_metrics, prior_probabilities

    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix="bench-ties-") as tmp:
        work = Path(tmp)
        data = load_data(args, work)
        labels = labels_of(data["test"])
        prior = prior_probabilities(labels_of(data["full_train"]))
        n = len(labels)
        preds = {"uniform": {"probs": np.full((n, 3), 1 / 3)}, "class prior": {"probs": np.tile(prior, (n, 1))}}
        names = {"zero_shot": "zero-shot judge (SmolLM2)", "judge": "fine-tuned judge (SmolLM2 + LoRA)",
                 "davidson": "tie-aware BT (MiniLM, davidson)", "cross_encoder": "3-class cross-encoder (MiniLM)"}
        for m in models:
            print(f"--- {names[m]}", flush=True)
            preds[names[m]] = run_model(m, data, args, work)
    gpt4 = gpt4_predictions(data, args.gpt4_eps)
    preds[f"GPT-4 verdict (one-hot, eps {args.gpt4_eps:g})"] = {"probs": gpt4["one_hot"]}
    preds["GPT-4 verdict (calibrated on train)"] = {"probs": gpt4["calibrated"]}

    table = {}
    for name, p in preds.items():
        swapped = p.get("ba")
        m = outcome_metrics(p["probs"], labels)
        if swapped is not None:
            single = outcome_metrics(p["ab"], labels, swapped_probs=swapped)
            m["position_consistency"] = single["position_consistency"]
            m["single_order"] = {k: single[k] for k in ("log_loss", "accuracy", "macro_f1", "swap_gap")}
        m.update({k: p[k] for k in ("train_s", "load_s", "infer_s", "outcome") if k in p})
        m.pop("reliability")
        table[name] = m
    groups = [c.group for c in data["test"]]
    loss = {name: per_judgement_loss(p["probs"], labels) for name, p in preds.items()}
    rewardlab_rows = [names[m] for m in models]
    checks = {}
    if rewardlab_rows:
        best = min(rewardlab_rows, key=lambda r: table[r]["log_loss"])
        checks["best_vs_prior"] = {"row": best, "gap": float((loss[best] - loss["class prior"]).mean()),
                                   "ci95": gap_interval(loss[best], loss["class prior"], groups, args.seed)}
    if "judge" in models and "zero_shot" in models:
        a, b = names["judge"], names["zero_shot"]
        checks["judge_vs_zero_shot"] = {"gap": float((loss[a] - loss[b]).mean()),
                                        "ci95": gap_interval(loss[a], loss[b], groups, args.seed)}
    total = time.perf_counter() - started

    def cell(value, fmt):
        return "—" if value is None else format(value, fmt)

    lines = [f"LLMFAO crowd judgements: {data['loaded']} loaded (empty responses left out), {data['skipped']} "
             f"duplicates skipped; split by pair id, stratified, test fraction {args.test_fraction}, seed {args.seed}",
             f"train (MiniLM rows): {describe(data['train'])} of {describe(data['full_train'])}",
             f"train (LoRA judge): {describe(data['judge_train'])}", f"test (every row): {describe(data['test'])}",
             f"MiniLM: max_length {args.max_length} (prompt <= {args.max_prompt_tokens}), {args.epochs:g} epoch(s), batch {args.batch_size}, lr {args.lr:g} "
             f"(head {args.lr_head:g}); judge: "
             f"max_length {args.judge_max_length}, {args.judge_epochs:g} epoch(s), batch {args.judge_batch_size}, "
             f"LoRA lr {args.judge_lr:g}; CPU only", "",
             "| model | log-loss | accuracy | macro-F1 | tie F1 | position consistency | train s | inference s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in table.items():
        pc = m.get("position_consistency")
        pc = None if pc is None else (f"{pc:.3f}" + (" (by construction)" if name == names["davidson"] else ""))
        lines.append(f"| {name} | {m['log_loss']:.4f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
                     f"{m['per_class']['tie']['f1']:.3f} | {pc or '—'} | {cell(m.get('train_s'), '.0f')} | "
                     f"{cell(m.get('infer_s'), '.1f')} |")
    lines.append("")
    for name, m in table.items():
        if "single_order" in m:
            s = m["single_order"]
            lines.append(f"{name}, order (A, B) alone: log-loss {s['log_loss']:.4f}, accuracy {s['accuracy']:.3f}, "
                         f"macro-F1 {s['macro_f1']:.3f}; mean |P(a) - P_swapped(b)| {s['swap_gap']:.3f}")
    for name, m in table.items():
        if m.get("outcome", {}).get("nu") is not None:
            lines.append(f"{name}: learned Davidson nu = {m['outcome']['nu']:.3f} (P(tie) at equal rewards "
                         f"{m['outcome']['nu'] / (2 + m['outcome']['nu']):.3f})")
    for key, c in checks.items():
        what = f"best rewardlab row ({c['row']}) minus class prior" if key == "best_vs_prior" else \
            "fine-tuned judge minus zero-shot judge"
        lines.append(f"log-loss gap, {what}: {c['gap']:+.4f} (95% pair-bootstrap interval {c['ci95'][0]:+.4f} "
                     f"to {c['ci95'][1]:+.4f})")
    lines.append(f"total runtime {total:.0f} s")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                    "data": {k: describe(data[k]) for k in ("full_train", "train", "judge_train", "test")},
                                    "table": table, "checks": checks, "runtime_s": total, "printed": lines}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
