#!/usr/bin/env bash
# Everything a lent GPU should measure, in one budgeted command (docs/gpu.md):
# population scaling and roofline, self-training vs Adam outer-training on
# gin_configs/gpu/, held-out evaluation of the self-trained optimizer.
#   bash launch/gpu_run.sh OUT_DIR [SECONDS] [--tiny] [lopt_selftrain.apps.gpu_run flags]
# SECONDS (default 540) is the whole run's budget, compilation included.
# OUT_DIR/summary.json and summary.md are complete whenever it ends; rerunning
# on the same OUT_DIR skips finished phases and resumes the comparison's arms.
# --tiny (or LOPT_GPU_TINY=1): CPU test sizes. Where lo is not installed and
# .whl/ holds the wheels of launch/gpu_wheels.sh, they are installed first.
set -euo pipefail
start_time=$(date +%s.%N) # the budget counts from here
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if (($# < 1)) || [[ $1 == -* ]]; then
  echo "usage: bash launch/gpu_run.sh OUT_DIR [SECONDS] [--tiny] [flags]" >&2
  exit 2
fi
out=$1
shift
seconds=540
if (($#)) && [[ $1 != -* ]]; then
  seconds=$1
  shift
fi
if [[ ${LOPT_GPU_TINY:-0} == 1 ]]; then set -- --tiny "$@"; fi
# shellcheck source=launch/gpu_env.sh
source launch/gpu_env.sh
exec "$python" launch/no_tensorflow.py lopt_selftrain.apps.gpu_run \
  --out_dir="$out" --seconds="$seconds" --start_time="$start_time" "$@"
