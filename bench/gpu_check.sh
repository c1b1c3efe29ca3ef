#!/usr/bin/env bash
# One prepared GPU check (fits in 10 minutes of GPU time): installs a CUDA build of torch into a fresh
# virtual environment, runs the GPU tests (pytest -m gpu) and the component bench on the GPU (fp32 and
# bf16, batch 1 and 8, sdpa attention), and writes the "## GPU" section of bench/RESULTS.md.
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with an NVIDIA GPU
#
# Environment: CUDA_INDEX (default https://download.pytorch.org/whl/cu128), VENV (default /tmp/georeason-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/georeason-gpu}
CUDA_INDEX=${CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch --index-url "$CUDA_INDEX"
"$VENV/bin/pip" install -q -e . pytest
"$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'the CUDA build of torch sees no GPU'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
timeout 180 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py | tee /tmp/georeason-gpu-tests.txt
timeout 300 "$VENV/bin/python" bench/bench_gpu.py --tests-log /tmp/georeason-gpu-tests.txt
