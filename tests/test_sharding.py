"""Population sharded over 8 fake CPU devices and over 2 processes (JAX's
distributed runtime on 127.0.0.1) gives the single-device result, and the
2-process run's checkpoint (gathered across processes) restores it."""

import json
import os
import socket
import subprocess
import sys

import apprun
import jax
import numpy as np

from lopt_selftrain import checkpoint, rounds

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "sharding_worker.py")
# Sharding changes XLA's blocking of the per-member math, not the math: the
# populations agree to float32 round-off (observed max |diff| ~1e-8).
ATOL = 1e-6
# tests/sharding_worker.py's bindings on the tiny config.
WORKER_BINDINGS = ("PopulationTrainer.population_size = 8",
                   "PopulationTrainer.num_meta_steps = 6",
                   "PBTConfig.exploit_fraction = 0.25")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _load(out_dir, process=0):
  with np.load(os.path.join(out_dir, f"process{process}.npz")) as f:
    arrays = {k: f[k] for k in f.files}
  with open(os.path.join(out_dir, f"process{process}.json")) as f:
    return arrays, json.load(f)


def test_sharded_and_multiprocess_runs_match_single_device(tmp_path):
  runs = {"one": ["1"], "eight": ["8"]}
  port = _free_port()
  runs.update({f"proc{i}": ["4", str(i), "2", str(port)] for i in range(2)})
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  # The workers set their own device count; other flags (conftest's) stay.
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if "device_count" not in f)
  procs = {}
  for name, args in runs.items():
    out = tmp_path / ("multi" if name.startswith("proc") else name)
    out.mkdir(exist_ok=True)
    log_dir = tmp_path / f"log_{'multi' if name.startswith('proc') else name}"
    procs[name] = subprocess.Popen(
        [sys.executable, WORKER, str(out), str(log_dir), *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for name, proc in procs.items():
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{output[-3000:]}"

  single, placement = _load(tmp_path / "one")
  assert placement["num_devices"] == 1 and placement["addressable_shards"] == 1

  sharded, placement = _load(tmp_path / "eight")
  assert placement == {"num_devices": 8, "num_processes": 1,
                       "addressable_shards": 8, "shard_rows": [1] * 8,
                       "spec": "P('population',)"}
  for key in single:
    np.testing.assert_allclose(sharded[key], single[key], atol=ATOL, rtol=0)

  views = [_load(tmp_path / "multi", p) for p in range(2)]
  for arrays, placement in views:
    assert placement["num_processes"] == 2 and placement["num_devices"] == 8
    assert placement["addressable_shards"] == 4  # each host holds half
    for key in single:
      np.testing.assert_allclose(arrays[key], single[key], atol=ATOL, rtol=0)
  for key in single:  # both processes agree exactly on the population
    np.testing.assert_array_equal(views[0][0][key], views[1][0][key])
  with open(tmp_path / "log_multi" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [0, 3, 6]  # written once (process 0)
  assert {(r["num_devices"], r["num_processes"]) for r in records} == {(8, 2)}

  # Each process held half of the population; the checkpoint holds all of it.
  trainer = apprun.gin_trainer(*WORKER_BINDINGS)
  step, tree, _ = checkpoint.restore_latest(
      str(tmp_path / "log_multi" / "checkpoints"),
      rounds.checkpoint_target(trainer.init()))
  assert step == 6
  restored = jax.tree_util.tree_leaves(trainer.thetas(tree["population"]))
  for i, leaf in enumerate(restored):
    np.testing.assert_array_equal(np.asarray(leaf), views[0][0][f"leaf{i}"])
  np.testing.assert_array_equal(tree["population"].meta_loss,
                                views[0][0]["meta_loss"])
