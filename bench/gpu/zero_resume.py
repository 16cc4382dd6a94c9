"""DeepSpeed ZeRO on this machine's accelerator: train MiniLM on HH-RLHF pairs for a few steps under the shipped
ZeRO-2 / ZeRO-3 configs, resume a copy from the middle state, and print how far the resumed run's final
weights and Adam moments are from the uninterrupted run's (0 = exact), with each run's pairs/s.

    python bench/gpu/zero_resume.py --stage 2 --precision bf16      # on a GPU (bench/gpu/run.sh zero)
    python bench/gpu/zero_resume.py --stage 3 --precision no --steps 4 --pairs 64 --workdir /tmp/z   # on a CPU
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"


def subset(n: int, folder: Path) -> Path:
    """The first ``n`` HH pairs, as a file of their own."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(HH, "rt") as f:
        lines = [line for _, line in zip(range(n), f)]
    path = folder / "pairs.jsonl"
    path.write_text("".join(lines))
    return path


def train(args, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "rewardlab" / "configs" / f"accelerate_zero{args.stage}.yaml"), "--num_processes", "1",
           "--mixed_precision", args.precision, "-m", "rewardlab", "train", "--data", str(args.data), "--out", str(out),
           "--on-bad-row", "skip", *extra]  # a few HH pairs are empty once the shared prompt is removed
    for setting in (f"train.max_steps={args.steps}", f"train.save_every={args.steps // 2}", "train.save_total_limit=3",
                    f"train.mixed_precision={args.precision}", "data.max_length=256", "train.log_with=[]"):
        cmd += ["--set", setting]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        sys.exit(f"zero{args.stage} {out.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def max_gap(a_file: Path, b_file: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(a_file), load_file(b_file)
    assert a.keys() == b.keys(), (a_file, b_file)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", type=int, choices=[1, 2, 3], default=2)
    p.add_argument("--precision", choices=["no", "bf16"], default="bf16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--pairs", type=int, default=600, help="the first this many HH dev pairs (80 % trained on)")
    p.add_argument("--workdir", default="/tmp/rewardlab-gpu/zero")
    args = p.parse_args()
    work = Path(args.workdir) / f"zero{args.stage}-{args.precision}"
    shutil.rmtree(work, ignore_errors=True)
    args.data = subset(args.pairs, work)
    whole = train(args, work / "whole")
    middle = f"step-{args.steps // 2:08d}"
    shutil.copytree(work / "whole" / "states" / middle, work / "resumed" / "states" / middle)
    resumed = train(args, work / "resumed", "--resume")
    last = f"step-{args.steps:08d}"
    gaps = {name: max_gap(work / "whole" / "states" / last / f"{name}.safetensors",
                          work / "resumed" / "states" / last / f"{name}.safetensors") for name in ("trainable", "optimizer")}
    gaps["model"] = max_gap(work / "whole" / "model" / "model.safetensors", work / "resumed" / "model" / "model.safetensors")
    print(f"zero{args.stage} {args.precision} ({whole['data']['distributed']}): {whole['pairs_per_second']:.1f} "
          f"pairs/s, peak CUDA MB {whole.get('peak_cuda_mb', float('nan')):.0f}; resumed from {middle}: max |diff| "
          + ", ".join(f"{k} {v:.2e}" for k, v in gaps.items())
          + f"; eval accuracy {whole['eval']['accuracy']:.3f} / {resumed['eval']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
