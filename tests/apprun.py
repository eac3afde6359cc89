"""Running the train app as a user would, for the reliability and bad-input tests.

Every process compiles the population step, so the subprocesses of a pytest
session share a persistent JAX compilation cache: only the first one compiles,
restarts pay just the imports. Importing TensorFlow (which lo imports at module
level) costs ~10 s of CPU per process, more than the rest of a tiny run, so
`app_command` runs the app as on a GPU image without TensorFlow
(launch/no_tensorflow.py; the same app, minus TensorBoard event files) unless a
test needs TensorFlow or is about the plain `python -m` command.
"""

import os
import pathlib
import subprocess
import sys

import gin

from lopt_selftrain import config
from lopt_selftrain.population import PopulationTrainer

TINY_CONFIG = os.path.join(config.REPO_ROOT, "gin_configs", "tests",
                           "tiny_quadratic.gin")

# Adds the embedded MNIST-1D family (a data stream) to the tiny config.
MNIST1D_BINDINGS = (
    "tiny_mlp/mnist1d_datasets.batch_size = 4",
    "tiny_mlp/MaskedMLPFamily.datasets = @tiny_mlp/mnist1d_datasets()",
    "tiny_mlp/MaskedMLPFamily.max_width = 4",
    "tiny_mlp/MaskedMLPFamily.min_width = 2",
    "tiny_mlp/MaskedMLPFamily.max_depth = 1",
    "TaskMixture.families = [@tiny_quad/FixedDimQuadraticFamily(), "
    "@tiny_mlp/MaskedMLPFamily()]",
)


def cache_dir(tmp_path_factory) -> str:
  """The persistent compilation cache: $LOPT_TEST_JAX_CACHE if set (.ci/run
  shares one between its two passes), else one per pytest session, shared by
  its xdist workers (a worker's base temp dir is the session's popen-gwN)."""
  if os.environ.get("LOPT_TEST_JAX_CACHE"):
    return os.environ["LOPT_TEST_JAX_CACHE"]
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  return str(base / "jax_cache")


def cache_settings(tmp_path_factory) -> dict[str, str | int]:
  """JAX options (as environment names) of the pytest session's persistent
  compilation cache: every computation is cached, however quick to compile."""
  return {
      "JAX_COMPILATION_CACHE_DIR": cache_dir(tmp_path_factory),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": 0,
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": -1,
  }


def app_env(tmp_path_factory) -> dict[str, str]:
  """Environment of an app process: CPU only, quiet TF, and the compile cache
  shared by every process of the pytest session."""
  env = dict(os.environ)
  env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
              "JAX_PLATFORMS": "cpu"})
  env.update({k: str(v) for k, v in cache_settings(tmp_path_factory).items()})
  return env


def app_command(log_dir: str, *flags: str, gin_configs=(TINY_CONFIG,),
                bindings=(), tensorflow: bool = False) -> list[str]:
  """The train app with the given configs, bindings, flags: `python -m
  lopt_selftrain.apps.train` if `tensorflow`, else through
  launch/no_tensorflow.py with the installed TensorFlow hidden."""
  runner = ([sys.executable, "-m"] if tensorflow else
            ["env", "LOPT_HIDE_TENSORFLOW=1", sys.executable,
             os.path.join(config.REPO_ROOT, "launch", "no_tensorflow.py")])
  return (runner + ["lopt_selftrain.apps.train", f"--train_log_dir={log_dir}"]
          + [f"--gin_config={c}" for c in gin_configs]
          + [f"--gin_bindings={b}" for b in bindings] + list(flags))


def start(command: list[str], env: dict[str, str],
          output: pathlib.Path) -> subprocess.Popen:
  """Starts the app writing stdout and stderr to `output`.out and `output`.err.

  Files, not pipes: tqdm's progress would fill an unread pipe and stall the run.
  """
  with open(f"{output}.out", "w") as out, open(f"{output}.err", "w") as err:
    return subprocess.Popen(command, env=env, cwd=config.REPO_ROOT,
                            stdout=out, stderr=err)


def stderr(output: pathlib.Path) -> str:
  """What a process started with `start(..., output)` wrote to stderr."""
  return pathlib.Path(f"{output}.err").read_text()


def last_line(text: str) -> str:
  """The last non-empty line of a process's output ('' if none)."""
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else ""


def gin_trainer(*bindings: str) -> PopulationTrainer:
  """The trainer the app builds from the tiny config (+ bindings), in-process."""
  try:
    config.parse([TINY_CONFIG], bindings)
    return PopulationTrainer()
  finally:
    gin.clear_config()
