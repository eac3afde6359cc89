"""Subprocess body of tests/test_sharding.py (devices must be set before JAX).

usage: sharding_worker.py OUT_DIR LOG_DIR NUM_DEVICES [PROCESS_ID NUM_PROCESSES PORT]
Trains tests/test_sharding.py's tiny config and writes OUT_DIR/process<i>.npz
(the final population as every process sees it) and process<i>.json (where the
population arrays live).
"""

import json
import os
import sys

out_dir, log_dir, num_devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                           f"--xla_force_host_platform_device_count={num_devices}")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import jax  # noqa: E402

process_id = 0
if len(sys.argv) > 4:
  process_id, num_processes, port = map(int, sys.argv[4:7])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)

# As on a GPU image: TensorFlow's import would cost each of the 4 workers ~10 s.
from lopt_selftrain import no_tensorflow  # noqa: E402

os.environ[no_tensorflow.HIDE_ENV] = "1"
no_tensorflow.install()

import gin  # noqa: E402
import numpy as np  # noqa: E402
from test_sharding import WORKER_BINDINGS  # noqa: E402

from lopt_selftrain import config, sharding, training  # noqa: E402
from lopt_selftrain.population import PopulationTrainer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
config.parse([os.path.join(REPO, "gin_configs", "tests", "tiny_quadratic.gin")],
             WORKER_BINDINGS)
trainer = PopulationTrainer()
state = training.train(trainer, log_dir)
thetas = trainer.thetas(state)
leaf = jax.tree_util.tree_leaves(thetas)[0]
placement = {
    "num_devices": jax.device_count(),
    "num_processes": jax.process_count(),
    "addressable_shards": len(leaf.addressable_shards),
    "shard_rows": [int(s.data.shape[0]) for s in leaf.addressable_shards],
    "spec": str(getattr(leaf.sharding, "spec", None)),
}
host = jax.tree_util.tree_map(sharding.to_host, thetas)
flat = {f"leaf{i}": x for i, x in enumerate(jax.tree_util.tree_leaves(host))}
flat["meta_loss"] = sharding.to_host(state.meta_loss)
np.savez(os.path.join(out_dir, f"process{process_id}.npz"), **flat)
with open(os.path.join(out_dir, f"process{process_id}.json"), "w") as f:
  json.dump(placement, f)
gin.clear_config()
