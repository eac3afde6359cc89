#!/usr/bin/env bash
# Several meta-training runs side by side on one accelerator, in one device
# call (docs/gpu.md, "Seeds side by side"): one `apps.train` of CONFIG per
# seed in SEEDS and, per seed in TWIN_SEEDS, its Adam-outer twin (outer_opt =
# lo's Adam at lr 1e-3, no PBT: the equal-budget baseline of docs/heldout.md).
# Each run saves a checkpoint every 50 meta steps and keeps them all. Runs
# still going 75 s before SECONDS (from the script's start, compilation
# included) are stopped (checkpoints are written atomically: at most the last
# 50 steps are lost); then every member of every checkpoint is exported
# (`apps.export --all_members --steps=all`: kilobytes, where a checkpoint of
# the conv config is 71 MB), so `apps.select` can pick at any step elsewhere.
# OUT_DIR then holds runs.tar.gz (per run: the exported members under
# populations/RUN/step_<S>/, metrics.jsonl, operative_config.gin, its log),
# progress.md (per run: checkpoints, the last logged step, best and median
# meta-loss) and, not packed, the checkpoints.
#   bash launch/gpu_seeds.sh OUT_DIR SECONDS CONFIG SEEDS [TWIN_SEEDS] [BINDING...]
# SEEDS, TWIN_SEEDS: comma lists ("" for none); BINDINGs: extra gin bindings
# for every run, e.g. 'PopulationTrainer.num_meta_steps = 2000'.
set -euo pipefail
start_time=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if (($# < 4)); then
  echo "usage: bash launch/gpu_seeds.sh OUT_DIR SECONDS CONFIG SEEDS [TWIN_SEEDS] [BINDING...]" >&2
  exit 2
fi
out=$1 seconds=$2 config=$3 seeds=$4 twin_seeds=${5:-}
shift $(($# < 5 ? 4 : 5))
if [[ ! $seconds =~ ^[0-9]+$ ]] || [[ ! -f $config ]]; then
  echo "error: SECONDS must be a whole number and CONFIG a gin file, got '$seconds' '$config'" >&2
  exit 2
fi
# shellcheck source=launch/gpu_env.sh
source launch/gpu_env.sh
# Runs share the device: no process takes all of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_COMPILATION_CACHE_DIR=$out/jax_cache
mkdir -p "$out/runs" "$out/logs" "$out/populations"
common=(--gin_config="$config"
  --gin_bindings='RunConfig.checkpoint_interval = 50'
  --gin_bindings='RunConfig.keep_checkpoints = 1000')
for binding in "$@"; do common+=(--gin_bindings="$binding"); done
twin=(--gin_bindings='PopulationTrainer.outer_opt = @Adam()'
  --gin_bindings='Adam.learning_rate = 1e-3' --gin_bindings='PBTConfig.enabled = False')
end_seconds=75 # left at the end for the export and packing
left=$((start_time + seconds - end_seconds - $(date +%s)))
pids=()
launch() { # NAME SEED [FLAGS...]: one training run in the background
  local name=$1 seed=$2
  shift 2
  timeout --signal=TERM --kill-after=5 "$left" "$python" launch/no_tensorflow.py \
    lopt_selftrain.apps.train --train_log_dir="$out/runs/$name" "${common[@]}" "$@" \
    --gin_bindings="PopulationTrainer.seed = $seed" >"$out/logs/$name.log" 2>&1 &
  pids+=($!)
}
IFS=, read -ra self_list <<<"$seeds"
IFS=, read -ra twin_list <<<"$twin_seeds"
for s in "${self_list[@]}"; do launch "self_s$s" "$s"; done
for s in "${twin_list[@]}"; do launch "adam_outer_s$s" "$s" "${twin[@]}"; done
for pid in "${pids[@]}"; do wait "$pid" || true; done # 124: stopped at the deadline
pids=()
for run in "$out"/runs/*/; do # on the CPU: the device is not needed
  name=$(basename "$run")
  JAX_PLATFORMS=cpu timeout 60 "$python" launch/no_tensorflow.py lopt_selftrain.apps.export \
    --run_dir="$run" --out="$out/populations/$name" --all_members --steps=all \
    >"$out/logs/export_$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
"$python" - "$out" <<'EOF' >"$out/progress.md"
import json, pathlib, sys
from lopt_selftrain import checkpoint
runs = sorted(pathlib.Path(sys.argv[1], "runs").iterdir())
print("| run | checkpoints | last logged step | wall s | best meta-loss | median |")
print("|---|---|---|---|---|---|")
for run in runs:
  steps = checkpoint.list_steps(str(run / "checkpoints"))
  lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
  last = json.loads(lines[-1]) if lines else {}
  print(f"| {run.name} | {','.join(map(str, steps)) or '-'} | {last.get('step', '-')} "
        f"| {last.get('wall_time_s', '-')} | {last.get('best_meta_loss', '-')} "
        f"| {last.get('median_meta_loss', '-')} |")
EOF
tar czf "$out/runs.tar.gz" --exclude='events.out.tfevents*' --exclude=checkpoints \
  -C "$out" runs logs populations
cat "$out/progress.md"
echo "gpu_seeds: done in $(($(date +%s) - start_time)) s"
