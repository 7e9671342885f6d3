#!/bin/sh
# The study "make training dynamics pay" (benchmarks.variants): every variant, its classifier twin
# and the fair baselines (top-k and ranked batches on the classifier's uncertainty), 10 paired
# seeds per preset, one code version per directory (provenance.json).
# Usage: sh benchmarks/run_td_pays.sh [PRESET...]  (default: the digits long-tail screens; the
# confirmations: mnist5k-ir10 mnist5k-ir100 mnist5k-ir10-paper mnist5k-ir100-paper)
# Results in benchmarks/results/td-pays/<preset>/; runs resume.
set -e
BASELINES="random margin entropy uncertainty tidal_entropy tidal_margin uncertainty_batch classifier_batch tidal_batch"
VARIANTS="tidal_balanced balanced tidal_balanced_batch balanced_batch tidal_modal_batch
tidal_modal_batch:measure=td_least_confidence tidal_combined tidal_space_batch proba_space_batch
tidal_batch:embedding=input classifier_batch:embedding=input tidal_disagreement"
# the confirmations (mnist5k presets; the paper's regime costs ~20x more per run): the baselines
# that matter and the screens' candidates
CONFIRM="random margin entropy tidal_entropy uncertainty_batch tidal_modal_batch balanced_batch
tidal_balanced_batch"
for preset in ${@:-digits-ir10 digits-ir100}; do
    case "$preset" in
        digits*) strategies="$BASELINES $VARIANTS" ;;
        *) strategies="$CONFIRM" ;;
    esac
    # shellcheck disable=SC2086
    python -m benchmarks.run --preset "$preset" --seeds 0 1 2 3 4 5 6 7 8 9 \
        --strategies $strategies --out-dir "benchmarks/results/td-pays/$preset"
done
