#!/usr/bin/env bash
# The test suite on a loaded machine: two CPU-bound `nfhiql train` jobs (the pointmaze CPU recipe,
# flow and Gaussian, one torch thread each) run while `make test` runs RUNS times; prints each
# suite's result line and wall time. The timing-robustness check of the suite (tests must not depend
# on how busy the 2 cores are). Usage: benchmarks/loaded_suite.sh [RUNS]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
RUNS=${1:-2}
NFHIQL=.venv/bin/nfhiql
OUT=runs/loaded-suite
DATA=$OUT/pointmaze-40.npz
mkdir -p "$OUT"
[ -f "$DATA" ] || $NFHIQL datagen pointmaze-medium-navigate --episodes 40 --seed 0 -o "$DATA" --quiet
pids=()
for policy in flow gaussian; do
  OMP_NUM_THREADS=1 $NFHIQL train --config config/train/pointmaze-medium-navigate-cpu.yaml agent.policy=$policy \
    run_dir=$OUT/load-$policy dataset.path=$DATA train.steps=10000000 train.eval_interval=0 --quiet --force \
    > "$OUT/load-$policy.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
sleep 20  # the load is up (both jobs past start-up) before the first suite starts
for run in $(seq "$RUNS"); do
  start=$SECONDS
  set +e
  make test > "$OUT/suite-$run.log" 2>&1
  rc=$?
  set -e
  echo "loaded suite run $run: rc $rc, $((SECONDS - start)) s: $(grep -E '[0-9]+ (passed|failed)' "$OUT/suite-$run.log" | tail -1)"
  ps -o pid=,pcpu=,etime= -p "${pids[@]}" | sed 's/^/  load job (pid, %cpu, elapsed): /'
done
