#!/usr/bin/env bash
# Does the comparison's verdict hold beyond one seed? Self-training + PBT vs.
# Adam outer-training at the tuned lr (1e-2, tuned on seed 0 by compare_cpu.sh)
# for more seeds: every seed changes the population init, the task draws and
# the evaluation tasks. 2-core CPU: ~8 min per seed.
# Results land in launch/results/seeds_cpu (seeds.md/json, per-seed figures and
# tables) and runs/seeds_cpu (per-arm logs and checkpoints).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seeds=${1:-1,2,3,4}
out=${2:-runs/seeds_cpu}
.venv/bin/python -m lopt_selftrain.compare --out_dir="$out" --seeds="$seeds" \
  --outer_steps=600 --adam_outer_lrs=1e-2 --skip_no_pbt --throughput_steps=0
results=launch/results/seeds_cpu
mkdir -p "$results"
cp "$out"/seeds.md "$out"/seeds.json "$results"/
for seed in ${seeds//,/ }; do
  mkdir -p "$results/seed_$seed"
  cp "$out/seed_$seed"/figure_meta_loss.png "$out/seed_$seed"/results.md \
    "$out/seed_$seed"/results.json "$results/seed_$seed"/
done
