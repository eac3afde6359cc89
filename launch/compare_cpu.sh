#!/usr/bin/env bash
# The paper's comparison on a 2-core CPU machine (~22 min at 600 outer steps):
# self-training with PBT vs. without PBT vs. Adam outer-training (3 learning
# rates), held-out tasks vs. tuned hand-designed Adam, and the population
# throughput benchmark.
#   bash launch/compare_cpu.sh [OUT_DIR] [OUTER_STEPS]
# Results land in OUT_DIR: figures, results.md/json, and per-arm logs and
# checkpoints under arms/ (docs/results.md shows the committed figures).
# A larger OUTER_STEPS on the same OUT_DIR extends the finished arms.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/compare_cpu}
steps=${2:-600}
.venv/bin/python -m lopt_selftrain.apps.compare --out_dir="$out" --meta_steps="$steps"
