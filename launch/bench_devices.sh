#!/usr/bin/env bash
# Population step time of the demo population (8 members, quadratic family) with
# 1/2/4/8 fake CPU devices. Fake devices share the machine's cores: this shows
# that the work is partitioned (tests/test_sharding.py shows results are equal),
# not a speed-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "| devices | population | seconds / population step |"
echo "|---|---|---|"
for devices in 1 2 4 8; do
  XLA_FLAGS=--xla_force_host_platform_device_count=$devices TF_CPP_MIN_LOG_LEVEL=3 \
    .venv/bin/python -m lopt_selftrain.apps.benchmark --mode=devices --steps=20 \
    --gin_config=gin_configs/selftrain_cpu_demo.gin \
    --gin_bindings='TaskMixture.families = [@demo_quad/FixedDimQuadraticFamily()]' \
    --gin_bindings='TaskMixture.weights = [1.0]' \
    --gin_bindings="TaskMixture.names = ['quadratic10']" 2>/dev/null | grep '^|'
done
