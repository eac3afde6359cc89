#!/usr/bin/env bash
# The paper's comparison on a 2-core CPU machine (~30 min): self-training with
# PBT vs. without PBT vs. Adam outer-training (3 learning rates), held-out tasks
# vs. tuned hand-designed Adam, and the population throughput benchmark.
# Results land in launch/results/compare_cpu (figures, results.md/json) and
# runs/compare_cpu (per-arm logs and checkpoints).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/compare_cpu}
.venv/bin/python -m lopt_selftrain.compare --out_dir="$out" --outer_steps=600
mkdir -p launch/results/compare_cpu
cp "$out"/figure_meta_loss.png "$out"/figure_inner_curves.png \
  "$out"/results.md "$out"/results.json launch/results/compare_cpu/
