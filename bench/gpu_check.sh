#!/usr/bin/env bash
# The prepared GPU check (issue 15): 10 minutes at most on a machine with one NVIDIA GPU.
#
#   bench/gpu_check.sh            # from the repository root, after `make install`
#
# 1. versions and devices (nvidia-smi, torch, CUDA, each visible GPU);
# 2. the GPU tests (`pytest -m gpu`: they skip without CUDA);
# 3. ResNet-34, two short epochs at 224 px on generated images, through the worker's code
#    path (API in process, then the Celery task function `foodlab worker` runs);
# 4. bench/train_throughput.py at 224x224 (bf16 where the GPU has it) at batch 32 and 256,
#    compiled and not: engine, engine on prepared batches, bare loop; waiting for data.
# Everything goes to bench/results/: gpu_check.log and train_throughput-gpu.{json,md}
# (GPU_CHECK_OUT=DIR to write elsewhere). Exits non-zero, writing nothing there, when no GPU
# is usable, and non-zero when a step fails (the later steps still run).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${GPU_CHECK_OUT:-bench/results}
export PYTHONPATH=$PWD

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi not found); nothing was run or written" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no usable GPU (torch.cuda.is_available() is false: driver" \
        "older than this torch build needs, or no device visible); nothing was run or written" >&2
    exit 2
fi

mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
FAILED=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, note a failure
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (at most ${limit} s; $(($(date +%s) - START)) s so far) ==="
    if ! timeout --kill-after=10 "$limit" "$@"; then
        echo "=== $name FAILED (exit status $?) ==="
        FAILED+=("$name")
    fi
}

echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null)"
step "nvidia-smi" 15 nvidia-smi
step "torch and CUDA" 30 "$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, "
          f"{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
print("bf16 native:", torch.cuda.get_device_capability(0) >= (8, 0))
PY
step "GPU tests" 90 "$PYTHON" -m pytest -q -m gpu tests/engine -p no:cacheprovider
step "ResNet-34 through the worker code path" 120 "$PYTHON" bench/gpu_worker_job.py --epochs 2 --image-size 224 --per-class 100
step "training throughput at 224 px" 330 "$PYTHON" bench/train_throughput.py --sizes 224 \
    --batches 32,256 --compile both --synth 640 --epochs 3 --augmentation standard \
    --precision auto --out "$OUT" --name train_throughput-gpu

echo
echo "gpu_check done in $(($(date +%s) - START)) s; log in $LOG"
if ((${#FAILED[@]})); then
    echo "gpu_check: FAILED steps: ${FAILED[*]}"
    exit 1
fi
