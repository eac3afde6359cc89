"""Shared pytest set-up: import the package (and so compat) before lo; --runslow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

import lopt_selftrain  # noqa: E402,F401  (restores legacy names before lo imports)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", help="run @pytest.mark.slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="long run; pass --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
