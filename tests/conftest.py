"""Shared pytest set-up: XLA's quick-compiling CPU level; import the package
(and so compat) before lo; a persistent JAX compilation cache; which tests an
xdist worker runs together; --runslow; the data_dir, clean_gin and
mock_image_datasets fixtures; `tiny_run`, a real 2-step run to export from."""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Tests check what programs compute, not how fast they run, and most of the
# suite's time is XLA compiling tiny programs: at LLVM optimisation level 0 the
# CPU backend compiles them ~2x faster. Set before JAX starts, and inherited by
# the app processes the tests start.
TEST_XLA_FLAG = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAG}".strip()

import apprun  # noqa: E402
import gin  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lopt_selftrain  # noqa: E402,F401  (restores legacy names before lo imports)
from lopt_selftrain import config, training  # noqa: E402
from lopt_selftrain.population import PopulationTrainer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Tests build many trainers of the same tiny configs: each new trainer
  object would compile again, so in-process tests share the on-disk
  compilation cache of the app processes (`apprun.app_env`)."""
  for name, value in apprun.cache_settings(tmp_path_factory).items():
    jax.config.update(name.lower(), value)


# Under xdist, each of these modules runs on one worker: their tests share a
# module fixture that takes minutes (a gpu_run.sh run, bad input's 14 app
# processes, reliability's uninterrupted run), which a module split between
# the workers builds twice.
SHARED_FIXTURE_MODULES = ("tests/test_bad_input.py", "tests/test_gpu_run.py",
                          "tests/test_reliability.py")
CONFIG_TEST = re.compile(
    r"tests/test_configs\.py::test_config_parses_and_runs_two_meta_steps"
    r"\[(adam_outer_.+\.gin)\]")


def xdist_scope(nodeid: str) -> str:
  """What one worker runs together: a module of SHARED_FIXTURE_MODULES; an
  Adam-outer config's test with its self-training twin's (the config includes
  it and compiles the same per-family programs, only the outer update, its own
  jit, differs: the second test reads them from the compilation cache); else
  the test alone."""
  module = nodeid.split("::")[0]
  if module in SHARED_FIXTURE_MODULES:
    return module
  adam_outer = CONFIG_TEST.fullmatch(nodeid)
  if adam_outer:
    path = os.path.join(config.REPO_ROOT, "gin_configs", adam_outer[1])
    with open(path) as f:
      twin = re.search(r"^include 'gin_configs/(.+)'$", f.read(), re.M)[1]
    return nodeid.replace(adam_outer[1], twin)
  return nodeid


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  """`-n N` (--dist load) balances `xdist_scope`s (those of most tests
  first) instead of single tests. (xdist's own --dist loadgroup does not group under pytest 9:
  it renames item._nodeid, which pytest 9 no longer reads.)"""
  if config.getvalue("dist") != "load":
    return None
  from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415

  class ScopeScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
      return xdist_scope(nodeid)

  return ScopeScheduling(config, log)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", help="run @pytest.mark.slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="long run; pass --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One MNIST-1D cache for the whole session (generated on first use)."""
  return str(tmp_path_factory.mktemp("lopt_data"))


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def mock_image_datasets(tmp_path_factory):
  """fashion_mnist at 8x8 and cifar10 at 32x32 from tfds' mock (no download);
  tfds is imported here so that conftest does not load TensorFlow for every
  test file."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from lopt_selftrain import tasks  # pylint: disable=g-import-not-at-top

  tfds_dir = str(tmp_path_factory.mktemp("tfds"))
  with tfds.testing.mock_data(num_examples=256):
    return {
        "fashion_mnist": tasks.tfds_image_datasets(
            "fashion_mnist", batch_size=16, data_dir=tfds_dir, image_size=(8, 8)),
        "cifar10": tasks.tfds_image_datasets(
            "cifar10", batch_size=16, data_dir=tfds_dir),
    }


TINY_RUN = """
PopulationTrainer.learned_opt = @MLPLOpt()
MLPLOpt.step_mult = 0.1
MLPLOpt.hidden_size = 8
MLPLOpt.compute_summary = False
PopulationTrainer.task_mixture = @TaskMixture()
TaskMixture.families = [@FixedDimQuadraticFamily()]
FixedDimQuadraticFamily.dim = 10
PopulationTrainer.population_size = 2
PopulationTrainer.num_meta_steps = 2
PopulationTrainer.estimator = @EstimatorConfig()
EstimatorConfig.kind = 'es'  # Compiles faster than PES; export does not care.
EstimatorConfig.num_tasks = 2
EstimatorConfig.trunc_length = 4
EstimatorConfig.steps_per_jit = 4
EstimatorConfig.trunc_sched = @ConstantTruncationSchedule()
ConstantTruncationSchedule.total_length = 8
PopulationTrainer.eval_config = @EvalConfig()
EvalConfig.num_tasks = 2
EvalConfig.num_steps = 5
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """A real 2-step run of a population of 2 on 10-d quadratics (read only:
  tests that change a run dir change a copy)."""
  log_dir = str(tmp_path_factory.mktemp("run"))
  gin.clear_config()
  config.parse([], [TINY_RUN])
  trainer = PopulationTrainer()
  config.RunConfig()  # The app builds it too, so the operative config binds it.
  config.write_operative_config(log_dir)
  state = training.train(trainer, log_dir, max_meta_steps=2)
  gin.clear_config()
  return log_dir, np.asarray(state.meta_loss), trainer.thetas(state)
