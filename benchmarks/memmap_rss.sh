#!/usr/bin/env bash
# Peak RSS of training from a dataset larger than its working set: a 10M-row cube-single-shaped dataset
# (the 1M-row data/cube-single-play-v0.npz tiled 10×, 1.3 GB of float32) converted to the memory-mapped
# .npy layout, then 1,000 steps of the cube CPU recipe from it under /usr/bin/time; for comparison, the
# peak RSS of loading the same rows from the .npz into memory. Usage: benchmarks/memmap_rss.sh [ROWS_M]
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
REPEAT=${1:-10}
PY=.venv/bin/python
NFHIQL=.venv/bin/nfhiql
OUT=runs/memmap-rss
SRC=data/cube-single-play-v0.npz
[ -f "$SRC" ] || { echo "memmap_rss: $SRC is missing (nfhiql datagen cube-single-play --episodes 1000 --seed 0 -o $SRC)"; exit 2; }
mkdir -p "$OUT"
NPZ=$OUT/cube-x$REPEAT.npz
DIR=$OUT/cube-x$REPEAT
if [ ! -d "$DIR" ]; then
  $PY - "$SRC" "$NPZ" "$REPEAT" <<'EOF'
import sys
import numpy as np
src, out, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
with np.load(src) as d:
    arrays = {key: np.concatenate([d[key]] * k) for key in d.files}
np.savez(out, **arrays)  # uncompressed: the layout OGBench ships
print(f"wrote {out}: {len(arrays['observations']):,} rows")
EOF
  $NFHIQL dataset convert "$NPZ" -o "$DIR"
fi
du -sh "$DIR"
measure() {  # label, command...: prints the label and the command's peak RSS
  local label=$1; shift
  /usr/bin/time -f "%M" -o "$OUT/rss.txt" "$@" > "$OUT/$label.log" 2>&1
  echo "$label: peak RSS $(awk '{printf "%.0f MB", $1 / 1024}' "$OUT/rss.txt")"
}
measure train-memmap $NFHIQL train --config config/train/cube-single-play-cpu.yaml dataset.path="$DIR" \
  run_dir=$OUT/run train.steps=1000 train.eval_interval=0 train.checkpoint_interval=1000 --force --quiet
grep -E "steps_per_s|checkpoint" "$OUT/train-memmap.log" | tail -1 || true
[ -f "$NPZ" ] && measure load-npz $PY -c "from nfhiql_core.data.dataset import load_dataset; d = load_dataset('$NPZ'); print(len(d))"
