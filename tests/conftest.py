"""Shared pytest set-up: import the package (and so compat) before lo; a
persistent JAX compilation cache; --runslow; the data_dir, clean_gin and
mock_image_datasets fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import apprun  # noqa: E402
import gin  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

import lopt_selftrain  # noqa: E402,F401  (restores legacy names before lo imports)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Tests build many trainers of the same tiny configs: each new trainer
  object would compile again, so in-process tests share the on-disk
  compilation cache of the app processes (`apprun.app_env`)."""
  for name, value in apprun.cache_settings(tmp_path_factory).items():
    jax.config.update(name.lower(), value)


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
