#!/bin/sh
# DISAL's open choices, decided by measurement: every variant of the interpretation on four
# presets (10 seeds each, paired with fresh random / classifier / TiDAL runs of the same
# seeds); results in benchmarks/results/disal-design/. Usage: sh benchmarks/run_disal_design.sh [PRESET...]
set -e
VARIANTS="random entropy margin tidal_entropy
    disal disal:sign=signed disal:sign=negated
    disal:target=td disal:target=td,sign=signed disal:target=td,sign=negated disal:target=expected
    disal:normalize=false disal:heads=checkpoint disal:n_checkpoints=5"
for preset in ${@:-digits digits-ir10 digits-ir100 mnist5k-ir100}; do
    # shellcheck disable=SC2086
    python -m benchmarks.run --preset "$preset" --strategies $VARIANTS \
        --out-dir "benchmarks/results/disal-design/$preset"
done
