# shellcheck shell=bash
# Sourced by the launch/gpu_*.sh scripts: picks the Python (.venv's where there
# is one, else $PYTHON or python3), installs .whl/ (launch/gpu_wheels.sh) into
# /tmp/lopt_site where lo is not importable, as on the GPU image, and puts the
# repository on PYTHONPATH. Run from the repository root.
python=${PYTHON:-python3}
if [[ -x .venv/bin/python && -z ${PYTHON:-} ]]; then python=.venv/bin/python; fi
if ! "$python" -c 'import learned_optimization' 2>/dev/null && [[ -d .whl ]]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/lopt_site .whl/*.whl
  export PYTHONPATH=/tmp/lopt_site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
