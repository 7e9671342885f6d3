#!/bin/sh
# Why does TiDAL lose on digits? The digits preset with one setting changed at a time
# (5 seeds, random / classifier entropy / TiDAL); results in benchmarks/results/ablations/.
set -e
run() {
    name=$1
    shift
    python -m benchmarks.run --dataset digits --seeds 0 1 2 3 4 \
        --strategies random entropy tidal_entropy tidal_margin "$@" \
        --out-dir "benchmarks/results/ablations/digits-$name"
}
run base
run cold-start --no-warm-start
run epochs10 --epochs 10
run epochs100 --epochs 100
run batch8 --batch-size 8
run td-weight0.1 --td-weight 0.1
run td-weight10 --td-weight 10
run td-hidden32 --td-hidden 32
run td-hidden512 --td-hidden 512
# the imbalanced case, where the paper's gains are largest: 30 (the preset) against 100 epochs
run ir10-base --dataset digits-ir10 --initial-size 40 --query-size 20
run ir10-epochs100 --dataset digits-ir10 --initial-size 40 --query-size 20 --epochs 100
