#!/usr/bin/env bash
# Downloads the pure-Python wheels that the lent GPU machines lack (their image
# has JAX 0.11.2 + CUDA, flax, optax, absl, matplotlib, tqdm; no TensorFlow, no
# network) into .whl/ at the repository root, and keeps .whl/ out of git.
# A device call then names .whl in `carry`; launch/gpu_run.sh installs them
# (pip install --no-index --no-deps --target /tmp/lopt_site) when lo is missing.
# flax and optax are pinned to the versions this repository is tested with.
#   bash launch/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >>"$exclude"
python=${PYTHON:-python3}
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  learned-optimization==0.0.1 dm-haiku==0.0.17 jmp==0.0.4 gin-config==0.5.0 \
  mnist1d==0.0.2.post1 flax==0.12.8 optax==0.2.8
ls -l .whl
