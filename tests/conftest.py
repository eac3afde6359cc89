"""Shared pytest set-up: import the package (and so compat) before lo; a
persistent JAX compilation cache; --runslow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import apprun  # noqa: E402
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
