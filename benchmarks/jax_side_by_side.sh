#!/bin/bash
# OGBench's JAX HIQL and `nfhiql bench train` (full-size pointmaze recipe, float32, flow and Gaussian) alternating,
# at 1 thread (pinned to core 0) and 2 threads, ROUNDS rounds: compare speeds only within one run.
#   benchmarks/jax_side_by_side.sh JAXVENV IMPLS_DIR DATA.npz [ROUNDS]     (with the project's venv active)
# JAXVENV: a venv with jax[cpu], flax, optax, distrax, ml_collections; IMPLS_DIR: OGBench's impls/ (fetched, not part
# of this project); DATA.npz: any dataset in OGBench's layout of pointmaze's shapes (obs 2, action 2). Our side reads
# the recipe's dataset, or a synthetic one of the same shapes where it is absent.
set -euo pipefail
jaxvenv=$1 impls=$2 data=$3 rounds=${4:-2}
cd "$(dirname "$0")/.."
recipe=config/train/pointmaze-medium-navigate-full.yaml
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r, 1 thread"
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" taskset -c 0 \
    "$jaxvenv/bin/python" benchmarks/jax_hiql_step.py "$impls" "$data" 15 3 2>&1 | tail -1
  taskset -c 0 python -m nfhiql_core.cli bench train --configs $recipe --steps 15 --warmup 3 --threads 1 \
    --compute-dtypes float32 2>&1 | grep -E "^pointmaze|cost"
  echo "== round $r, 2 threads"
  "$jaxvenv/bin/python" benchmarks/jax_hiql_step.py "$impls" "$data" 15 3 2>&1 | tail -1
  python -m nfhiql_core.cli bench train --configs $recipe --steps 15 --warmup 3 --threads 2 \
    --compute-dtypes float32 2>&1 | grep -E "^pointmaze|cost"
done
