#!/usr/bin/env bash
# The one prepared run for a borrowed GPU, under 8 minutes: the CUDA tests, then pool scoring on
# the GPU (floor by batch size, tidal_entropy in float32 and bfloat16). Results go to $OUT
# (default benchmarks/results/gpu); commit them and quote them in the performance docs.
#   bash benchmarks/gpu_check.sh            # after: pip install torch==... -e ".[test]"
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" | tee "$OUT/device.txt"
timeout 240 python -m pytest -m cuda -q -p no:cacheprovider -o addopts="" tests 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 200 python -m benchmarks.gpu_scoring --device cuda --out-dir "$OUT" 2>&1 | tee "$OUT/gpu_scoring.txt"
