#!/usr/bin/env bash
# Does the comparison's verdict hold beyond one seed? Self-training + PBT vs.
# Adam outer-training at the tuned lr (1e-2, tuned on seed 0 by compare_cpu.sh)
# for more seeds: every seed changes the population init, the task draws and
# the evaluation tasks. 2-core CPU: ~8 min per seed.
# Results land in OUT_DIR (default runs/seeds_cpu): seeds.md/json, and per seed
# (seed_<S>/) figures, tables and per-arm logs and checkpoints.
#   bash launch/seeds_cpu.sh [SEEDS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seeds=${1:-1,2,3,4}
out=${2:-runs/seeds_cpu}
.venv/bin/python -m lopt_selftrain.apps.compare --out_dir="$out" --seeds="$seeds" \
  --meta_steps=600 --adam_outer_lrs=1e-2 --skip_no_pbt --throughput_steps=0
