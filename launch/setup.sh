#!/usr/bin/env bash
# Creates (or updates) the virtualenv for lopt_selftrain and installs the package
# editable with its test extra. Safe to re-run: a satisfied environment costs seconds.
#
#   LOPT_VENV  virtualenv path            (default: <repo>/.venv)
#   LOPT_JAX   JAX requirement to install  (default: jax; on Cloud TPU VMs: "jax[tpu]")
#   PYTHON     interpreter for a new venv  (default: python3, >= 3.10)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LOPT_VENV:-$repo/.venv}
jax_spec=${LOPT_JAX:-jax}

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ ! -x "$venv/bin/uv" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip uv
fi
# learned-optimization 0.0.1 pins 2022 packages that no longer resolve; the overrides
# file drops or lifts those pins (see README, "Installation notes").
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" \
  --override "$repo/launch/lo_overrides.txt" \
  "$jax_spec" -e "${repo}[test]"
echo "lopt_selftrain installed in $venv"
