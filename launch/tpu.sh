#!/usr/bin/env bash
# Cloud TPU VM launcher for lopt_selftrain: create a TPU VM (one host or a multi-host
# slice), install this repo on every worker, train a gin config on all of them, follow
# the log, fetch the gs:// results, delete the VM. See `launch/tpu.sh --help`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu.sh COMMAND [options]

Commands:
  create    create the TPU VM
  install   copy this checkout (or clone --repo-url) to every worker, then run
            LOPT_JAX='jax[tpu]' bash launch/setup.sh there
  run       start `python -m lopt_selftrain.apps.train` on every worker under nohup
            (log: ~/lopt_selftrain/train.log on each worker); rerunning resumes
  logs      follow a worker's training log (tail -F)
  fetch     sync the gs:// log dir into a local directory
  delete    delete the TPU VM
  all       create, install, run

Options:
  --name NAME              TPU VM name (required; env LOPT_TPU_NAME)
  --zone ZONE              zone, e.g. us-central2-b (v4), us-west4-a (v5e)
                           (required; env LOPT_TPU_ZONE)
  --project PROJECT        GCP project (default: gcloud's configured project)
  --accelerator-type TYPE  default v4-8 (env LOPT_TPU_TYPE); a size above 8
                           (v4-32, v5litepod-16) is a multi-host slice, and run
                           passes --multihost. Give create and run the same type.
  --dry-run                print the commands (shell-quoted) instead of running them
  -h, --help               show this help
 create:
  --version VERSION        TPU runtime (default by type: v4 and older
                           tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
                           v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  --spot                   spot VM: cheaper, may be preempted (then delete, create,
                           install and run again: training resumes from gs://)
 install:
  --repo-url URL           git clone URL on the workers instead of copying this checkout
  --ref REF                branch, tag or commit to check out (default: remote HEAD)
  --jax SPEC               JAX requirement (default: jax[tpu])
 run:
  --gin-config FILE        gin file relative to the repo root (required, repeatable)
  --gin-binding BINDING    gin binding, e.g. 'PopulationTrainer.seed=1' (repeatable)
  --log-dir gs://BUCKET/DIR  training log dir (required; also for fetch)
  --max-meta-steps N      stop after N outer steps
 logs:
  --worker N               worker whose log to follow (default 0)
 fetch:
  --dest DIR               local parent directory (default: runs); results land
                           in DIR/<last part of --log-dir>

Example:
  launch/tpu.sh all --name lopt-v4 --zone us-central2-b --accelerator-type v4-32 \
    --gin-config gin_configs/FILE.gin --log-dir gs://BUCKET/runs/v4-32
EOF
}

die() {
  echo "tpu.sh: $*" >&2
  exit 2
}

# Prints one word shell-quoted, like Python's shlex.quote, but keeps an option's
# name outside the quotes: --command='cd x'.
quote() {
  local sq="'" esc="'\\''"
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ ^(--[A-Za-z0-9_-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//$sq/$esc}"
  fi
}

# Prints the words shell-quoted, space-separated: a line to paste into a shell.
quoted() {
  local words=() w
  for w in "$@"; do words+=("$(quote "$w")"); done
  echo "${words[*]}"
}

# Runs a command, or with --dry-run only prints it.
step() {
  if ((dry_run)); then
    quoted "$@"
  else
    echo "+ $(quoted "$@")" >&2
    "$@"
  fi
}

# tpu_ssh WORKER COMMAND: runs COMMAND on worker WORKER (a number, or all).
tpu_ssh() {
  step gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker="$1" --command="$2"
}

# v4-32 -> 32: TensorCores for v2-v4 and v5p, chips for v5e and v6e. Either way a
# host has at most 8, so a size above 8 means a multi-host slice.
is_multihost() { ((${accelerator##*-} > 8)); }

default_version() {
  case $accelerator in
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

cmd_create() {
  local args=(--accelerator-type="$accelerator" --version="${version:-$(default_version)}")
  if ((spot)); then args+=(--spot); fi
  step gcloud compute tpus tpu-vm create "$name" "${where[@]}" "${args[@]}"
}

cmd_install() {
  # Ubuntu's python3 lacks venv until python3-venv is installed; on a fresh VM,
  # unattended upgrades may hold the apt lock for a few minutes.
  local venv="{ python3 -c \"import ensurepip\" 2>/dev/null || { sudo apt-get update -qq \
&& sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv; }; }"
  local setup
  setup="cd $remote_dir && LOPT_JAX=$(quote "$jax") bash launch/setup.sh"
  if [ -n "$repo_url" ]; then
    local git="git -C $remote_dir"
    tpu_ssh all "{ [ -d $remote_dir/.git ] || git clone -q $(quote "$repo_url") $remote_dir; } \
&& $git fetch -q origin $(quote "$ref") && $git checkout -q --force FETCH_HEAD && $venv && $setup"
    return
  fi
  # Copy what git tracks or would track, so .venv, runs/ and caches stay here.
  local entries=() entry
  while IFS= read -r entry; do
    if [ -e "$repo/$entry" ]; then entries+=("$repo/$entry"); fi
  done < <(git -C "$repo" ls-files --cached --others --exclude-standard | cut -d/ -f1 | sort -u)
  ((${#entries[@]})) || die "$repo is not a git checkout; use --repo-url"
  tpu_ssh all "mkdir -p $remote_dir && $venv"
  step gcloud compute tpus tpu-vm scp "${entries[@]}" "$name:$remote_dir" "${where[@]}" \
    --worker=all --recurse
  tpu_ssh all "$setup"
}

cmd_run() {
  local train=(.venv/bin/python -m lopt_selftrain.apps.train "${train_flags[@]}" --train_log_dir="$log_dir")
  if is_multihost; then train+=(--multihost); fi
  tpu_ssh all "cd $remote_dir && nohup $(quoted "${train[@]}") >> train.log 2>&1 < /dev/null &"
}

cmd_logs() { tpu_ssh "$worker" "tail -n 100 -F $remote_dir/train.log"; }

cmd_fetch() {
  local dest_dir
  dest_dir="$dest/$(basename "$log_dir")"
  step mkdir -p "$dest_dir"
  step gcloud storage rsync "$log_dir" "$dest_dir" --recursive
}

cmd_delete() { step gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet; }

cmd_all() {
  cmd_create
  cmd_install
  cmd_run
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
remote_dir=lopt_selftrain # on each worker, relative to the home directory

[ $# -ge 1 ] || die "missing COMMAND; see --help"
command=$1
shift
case $command in
  -h | --help) usage && exit 0 ;;
  create | install | run | logs | fetch | delete | all) ;;
  *) die "unknown command '$command'; see --help" ;;
esac

name=${LOPT_TPU_NAME:-}
zone=${LOPT_TPU_ZONE:-}
accelerator=${LOPT_TPU_TYPE:-v4-8}
project='' version='' repo_url='' ref=HEAD jax='jax[tpu]' log_dir='' gin_config=''
dest=runs worker=0 spot=0 dry_run=0
train_flags=() # for lopt_selftrain.apps.train, in the order given
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" && continue ;;
    -h | --help) usage && exit 0 ;;
    --dry-run) dry_run=1 && shift && continue ;;
    --spot) spot=1 && shift && continue ;;
  esac
  if (($# < 2)) || [[ $2 == --* ]]; then die "$1: unknown option or missing value; see --help"; fi
  case $1 in
    --name) name=$2 ;;
    --zone) zone=$2 ;;
    --project) project=$2 ;;
    --accelerator-type) accelerator=$2 ;;
    --version) version=$2 ;;
    --repo-url) repo_url=$2 ;;
    --ref) ref=$2 ;;
    --jax) jax=$2 ;;
    --gin-config) gin_config=$2 && train_flags+=(--gin_config="$2") ;;
    --gin-binding) train_flags+=(--gin_bindings="$2") ;;
    --log-dir) log_dir=$2 ;;
    --max-meta-steps) train_flags+=(--max_meta_steps="$2") ;;
    --worker) worker=$2 ;;
    --dest) dest=$2 ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift 2
done

[[ $accelerator =~ ^v[0-9a-z]+-[0-9]+$ ]] || die "bad --accelerator-type '$accelerator' (e.g. v4-8)"
if [ "$command" != fetch ]; then
  [ -n "$name" ] || die "--name is required (or set LOPT_TPU_NAME)"
  [ -n "$zone" ] || die "--zone is required (or set LOPT_TPU_ZONE)"
fi
if [[ $command == run || $command == all ]]; then
  [ -n "$gin_config" ] || die "--gin-config is required"
fi
if [[ $command == run || $command == all || $command == fetch ]]; then
  [[ $log_dir == gs://?* ]] || die "--log-dir gs://BUCKET/DIR is required"
fi
where=(--zone="$zone")
if [ -n "$project" ]; then where+=(--project="$project"); fi

"cmd_$command"
