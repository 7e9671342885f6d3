#!/bin/sh
# TD-aware ranked batches against top-k TD entropy on the long-tail presets (10 seeds each,
# paired with fresh random and tidal_entropy runs of the same seeds); results in
# benchmarks/results/batch/. Usage: sh benchmarks/run_batch.sh [PRESET...]
set -e
VARIANTS="random tidal_entropy tidal_batch tidal_batch:weight=0.8"
for preset in ${@:-digits-ir10 digits-ir100 mnist5k-ir10 mnist5k-ir100}; do
    # shellcheck disable=SC2086
    python -m benchmarks.run --preset "$preset" --strategies $VARIANTS \
        --out-dir "benchmarks/results/batch/$preset"
done
