#!/usr/bin/env bash
# Learning check for the CPU recipe (issue 2): generate pointmaze-medium-navigate with OGBench's
# procedure (1000 episodes x 1001 steps, seed 0), train NF-HIQL (flow) and HIQL (gaussian) side by
# side (one thread each on a 2-core machine), evaluate each on 5 tasks x 50 episodes, plot curves.
# Usage: benchmarks/learning_check.sh [RECIPE]   (default: the pointmaze CPU recipe)
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
NFHIQL=.venv/bin/nfhiql
RECIPE=${1:-config/train/pointmaze-medium-navigate-cpu.yaml}
DATA=data/pointmaze-medium-navigate-v0.npz
OUT=runs/learning-check
mkdir -p "$OUT"
[ -f "$DATA" ] || $NFHIQL datagen pointmaze-medium-navigate --episodes 1000 --seed 0 --workers 2 -o "$DATA"
for policy in flow gaussian; do
  ( start=$SECONDS
    $NFHIQL train --config "$RECIPE" agent.policy=$policy run_dir=$OUT/$policy dataset.path=$DATA --quiet --force
    echo "$policy: training wall time $((SECONDS - start)) s" ) > "$OUT/train-$policy.log" 2>&1 &
done
wait
for policy in flow gaussian; do
  tail -n 1 "$OUT/train-$policy.log"
  $NFHIQL eval $OUT/$policy/checkpoint.pt --episodes 50 --seed 0 --json $OUT/eval-$policy.json --quiet
done
$NFHIQL plot $OUT/flow $OUT/gaussian -o $OUT/curves.png
