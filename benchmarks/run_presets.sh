#!/bin/sh
# Reproduce the committed results: every CPU preset, one after another (about an hour on one core).
set -e
for preset in digits digits-ir10 digits-ir100 mnist5k-ir100 mnist5k-ir10 mnist5k; do
    python -m benchmarks.run --preset "$preset"
done
