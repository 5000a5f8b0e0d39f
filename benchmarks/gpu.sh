#!/usr/bin/env bash
# The GPU check in one command, on a machine with CUDA torch but without this project's other
# packages (the device tool's H200): installs .gpu-wheels/ (made here by
# scripts/gpu_wheels.sh, carried along) into /tmp/site, then runs every part of
# benchmarks/gpu.py on svimo-5b, writing gpu.json and gpu.log to $OUT (or outputs/gpu).
#   device run: command "bash benchmarks/gpu.sh", carry [".gpu-wheels"], timeout_s 540
# Extra arguments go to benchmarks/gpu.py (e.g. --parts train,sampling).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu-wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out=${OUT:-outputs/gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.log"
python3 -c "import torch, deepspeed, diffusers; print('torch', torch.__version__, \
'deepspeed', deepspeed.__version__, 'diffusers', diffusers.__version__)" | tee -a "$out/gpu.log"
set -o pipefail
python3 benchmarks/gpu.py --json "$out/gpu.json" "$@" 2>&1 | tee -a "$out/gpu.log"
