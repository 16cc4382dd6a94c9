"""Where rewardlab's training step spends its time on this machine's accelerator: each optimiser step's wall
time, split into the micro-batches' forward + backward and the rest (clipping, optimiser, scheduler, EMA,
logging), with the step's padded batch shape, whether that width is new to the run (work done once per tensor
shape, such as a cuDNN attention plan, is paid on those steps) and the device mallocs it made, then the CUDA
caching allocator's counters (device mallocs, retries after a failed malloc) and the median step with a new
width against one with a width seen before. One run per call; compare runs with different ``--set`` overrides
(``train.pad_to_multiple_of=64``), ``--sdpa`` backends or ``PYTORCH_CUDA_ALLOC_CONF`` values. ``--profile N`` records steps 2 .. N+1 with the torch profiler and prints
the operators that took the most self CPU and self device time (where a slow step's time goes).

    python bench/gpu/step_times.py --backbone random:decoder-0.5b            # on a GPU (bench/gpu/run.sh steps)
    python bench/gpu/step_times.py --set train.group_by_length=false --profile 3
    python bench/gpu/step_times.py --set train.pad_to_multiple_of=64 --sdpa efficient
    python bench/gpu/step_times.py --device cpu --backbone minilm --limit 40 --batch-size 8 --max-length 128
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compare_trl():
    spec = importlib.util.spec_from_file_location("compare_trl", ROOT / "bench" / "compare_trl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--backbone", default="random:decoder-0.5b")
    p.add_argument("--limit", type=int, default=384, help="HH dev pairs drawn (80 %% trained on)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="bf16", choices=["no", "bf16"])
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps after two warm-up steps")
    p.add_argument("--sdpa", default="", help="the scaled-dot-product attention backends allowed, comma-separated "
                   "(flash, efficient, cudnn, math); default: torch's own choice")
    p.add_argument("--label", default="", help="a name for this run in the summary line")
    p.add_argument("--workdir", default="/tmp/rewardlab-gpu/steps")
    args = p.parse_args()

    import torch
    from transformers import AutoTokenizer

    from rewardlab.config import load_config
    from rewardlab.train import trainer as trainer_module
    from rewardlab.train.run import train

    ct = compare_trl()
    ns = argparse.Namespace(backbone=args.backbone, workdir=args.workdir, seed=0, max_length=args.max_length,
                            attn_implementation="sdpa", limit=args.limit)
    backbone = ct.materialise_backbone(ns)
    workdir = Path(args.workdir) / "hh"
    ct.prepare("hh", ns, workdir, AutoTokenizer.from_pretrained(backbone))
    cuda = args.device == "cuda" and torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    allowed = [names[n.strip()] for n in args.sdpa.split(",") if n.strip()]
    backends = contextlib.nullcontext() if not allowed else sdpa_kernel(allowed)
    if cuda:
        by_value = {int(b.value): b.name for b in SDPBackend.__members__.values()}
        order = [by_value.get(int(v), str(v)) for v in torch._C._get_sdp_priority_order()] \
            if hasattr(torch._C, "_get_sdp_priority_order") else "n/a"
        enabled = {n: getattr(torch.backends.cuda, f"{n}_sdp_enabled")() for n in ("flash", "mem_efficient", "cudnn",
                                                                                    "math")}
        print(f"sdpa: priority {order}; enabled {enabled}; allowed here {args.sdpa or 'all'}; "
              f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")

    rows: list[dict] = []
    seen_widths: set[int] = set()
    marks = {"end": None}
    original = trainer_module.Trainer._accumulate

    profiler = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        profiler = profile(activities=activities, schedule=schedule(wait=0, warmup=2, active=args.profile, repeat=1),
                           record_shapes=True)
        profiler.start()

    def timed_accumulate(self, group):
        if profiler is not None and rows:
            profiler.step()
        sync()
        mallocs = torch.cuda.memory_stats().get("num_device_alloc", 0) if cuda else 0
        start = time.perf_counter()
        rest = start - marks["end"] if marks["end"] is not None else float("nan")  # the previous step's remainder
        if rows:
            rows[-1]["rest_ms"] = rest * 1000
        loss = original(self, group)
        sync()
        marks["end"] = time.perf_counter()
        shapes = [tuple(b["items"]["input_ids"].shape) for b in group]
        new = any(s[-1] not in seen_widths for s in shapes)
        seen_widths.update(s[-1] for s in shapes)
        mallocs = (torch.cuda.memory_stats().get("num_device_alloc", 0) if cuda else 0) - mallocs
        rows.append({"fb_ms": (marks["end"] - start) * 1000, "shapes": shapes, "rest_ms": float("nan"), "new": new,
                     "mallocs": mallocs})
        return loss

    trainer_module.Trainer._accumulate = timed_accumulate
    cfg = load_config(None, [
        f"model.backbone={backbone}", f"train.mixed_precision={args.precision}",
        f"data.train={workdir / 'train.jsonl'}", "data.eval_fraction=0", f"data.max_length={args.max_length}",
        f"train.output_dir={Path(args.workdir) / 'run'}", "train.epochs=1", f"train.batch_size={args.batch_size}",
        "train.lr_backbone=5e-5", "train.lr_head=5e-5", "train.weight_decay=0", "train.warmup_ratio=0",
        "train.log_with=[]", "train.progress=false", "train.save_every=1000000000", *args.overrides])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with backends:
        result = train(cfg)
    m = result.metrics
    if profiler is not None:
        profiler.stop()
        device_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        for key in dict.fromkeys(("self_cpu_time_total", device_key)):
            print(f"\nprofile of {args.profile} step(s), by {key}:")
            print(profiler.key_averages(group_by_input_shape=False).table(sort_by=key, row_limit=15, max_name_column_width=60))
    print("\nstep | forward+backward ms | rest ms | new width | device mallocs | padded shape(s) (rows x length)")
    for i, r in enumerate(rows):
        print(f"{i:4d} | {r['fb_ms']:8.1f} | {r['rest_ms']:8.1f} | {'new' if r['new'] else '   '} | {r['mallocs']:4d} | "
              f"{' '.join('x'.join(map(str, s)) for s in r['shapes'])}")
    steady = rows[2:] or rows
    fb = statistics.median(r["fb_ms"] for r in steady)
    rest = [r["rest_ms"] for r in steady if r["rest_ms"] == r["rest_ms"]]
    alloc = ""
    if cuda:
        s = torch.cuda.memory_stats()
        alloc = (f"; cudaMalloc {s.get('num_device_alloc', 'n/a')}, cudaFree {s.get('num_device_free', 'n/a')}, "
                 f"alloc retries {s.get('num_alloc_retries', 'n/a')}, segments {s.get('segment.all.allocated', 'n/a')}")
    by_width = {flag: [r["fb_ms"] for r in steady if r["new"] == flag] for flag in (True, False)}
    median = lambda xs: f"{statistics.median(xs):.0f} ms ({len(xs)})" if xs else "none"
    print(f"steps {args.label or ' '.join(args.overrides) or 'defaults'}: median forward+backward of steady steps "
          f"with a new width {median(by_width[True])}, with a width seen before {median(by_width[False])}")
    print(f"steps {args.label or ' '.join(args.overrides) or 'defaults'}: {len(rows)} steps, train {m['train_seconds']:.1f} s, "
          f"{m['pairs_per_second']:.1f} pairs/s, first step {rows[0]['fb_ms']:.0f} ms, median forward+backward "
          f"{fb:.0f} ms, median rest {statistics.median(rest) if rest else float('nan'):.0f} ms, padded "
          f"{1 - m['tokens'] / max(m['padded_tokens'], 1):.1%}{alloc}")


if __name__ == "__main__":
    main()
