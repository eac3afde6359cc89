"""Tests for TaskMixture, the mixture gin configs and the step_time benchmark."""

import glob
import os
import pathlib
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow_datasets as tfds
from learned_optimization.tasks import quadratics

from lopt_selftrain import tasks
from lopt_selftrain.apps import step_time as step_time_app

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "tasks"


@gin.configurable(module="test_mixture")
def _mixture_consumer(task_mixture):
  """Stands in for the trainer, which receives the mixture through gin."""
  return task_mixture


# --- digits is reserved for the held-out suite


def _datasets_names(family):
  """Dataset names a family (or a wrapped family) draws from."""
  names = set()
  while family is not None:
    datasets = getattr(family, "datasets", None)
    if datasets is not None:
      names.add(datasets.extra_info.get("name"))
    family = getattr(family, "task_family", None)
  return names


MIXTURE_CONFIGS = sorted(glob.glob(str(GIN_DIR.parent / "**" / "*.gin"),
                                   recursive=True))


@pytest.mark.parametrize("path", MIXTURE_CONFIGS, ids=os.path.basename)
def test_no_mixture_config_reaches_digits(path, data_dir, clean_gin,
                                          monkeypatch, tmp_path):
  """Every gin file that builds a TaskMixture builds it without touching
  scikit-learn's bundled sets (digits, breast cancer, wine, iris: reserved for
  lopt_selftrain.heldout)."""
  import sklearn.datasets  # pylint: disable=g-import-not-at-top

  from lopt_selftrain import config, training  # noqa: F401  (gin registrations)
  from lopt_selftrain.tasks import heldout as heldout_tasks

  def forbidden(*args, **kwargs):
    raise AssertionError("a meta-training mixture loaded a held-out dataset")

  for loader in ("load_digits", "load_breast_cancer", "load_wine", "load_iris"):
    monkeypatch.setattr(sklearn.datasets, loader, forbidden)
  monkeypatch.setattr(heldout_tasks, "sklearn_arrays", forbidden)
  config.parse([path], [f"mnist1d_datasets.data_dir = '{data_dir}'",
                        f"TFDS_DIR = '{tmp_path}'"])
  if "TaskMixture.families" not in gin.config_str():
    pytest.skip("builds no TaskMixture")
  # 1500 mock examples: every validation split fills a batch of 128.
  with tfds.testing.mock_data(num_examples=1500):
    mixture = tasks.TaskMixture()
  for family in mixture.families:
    assert "digits" not in _datasets_names(family)


def test_broad_mixture_has_the_promised_families(data_dir, clean_gin):
  gin.parse_config_files_and_bindings(
      [str(GIN_DIR / "mix_broad.gin")],
      [f"mnist1d_datasets.data_dir = '{data_dir}'"])
  mixture = tasks.TaskMixture()
  kinds = {type(f).__name__ for f in mixture.families}
  assert {"MaskedMLPFamily", "MaskedConv1DFamily", "ReparamWeightsFamily",
          "FixedDimQuadraticFamily", "ConditionedQuadraticFamily"} <= kinds
  batch_sizes = {f.datasets.abstract_batch["image"].shape[0]
                 for f in mixture.families if f.datasets is not None}
  assert len(batch_sizes) >= 3


# --- mixture


def test_mixture_samples_families_by_weight():
  families = [quadratics.FixedDimQuadraticFamily(d) for d in (2, 3, 4)]
  mixture = tasks.TaskMixture(families, weights=[2.0, 5.0, 3.0])
  assert mixture.families == tuple(families) and len(mixture) == 3
  np.testing.assert_allclose(mixture.weights, [0.2, 0.5, 0.3])
  assert mixture.names == tuple(f"FixedDimQuadraticFamily_{i}" for i in (1, 2, 3))
  draws = [mixture.sample_index(np.random.default_rng([0, i]))
           for i in range(2000)]
  freqs = np.bincount(draws, minlength=3) / len(draws)
  np.testing.assert_allclose(freqs, mixture.weights, atol=0.04)
  assert mixture.sample_index(np.random.default_rng([0, 7])) == draws[7]


def test_mixture_uniform_default_and_explicit_names():
  families = [quadratics.FixedDimQuadraticFamily(d) for d in (2, 3)]
  mixture = tasks.TaskMixture(families, names=["a", "b"])
  np.testing.assert_allclose(mixture.weights, [0.5, 0.5])
  assert mixture.names == ("a", "b")
  assert "a: 0.5" in repr(mixture)


@pytest.mark.parametrize("kwargs, match", [
    ({"families": []}, "at least one"),
    ({"weights": [1.0, -1.0]}, ">= 0"),
    ({"weights": [0.0, 0.0]}, "not all zero"),
    ({"weights": [1.0, float("nan")]}, "finite"),
    ({"weights": [1.0]}, "1 weights for 2 families"),
    ({"names": ["a"]}, "2 unique names"),
    ({"names": ["a", "a"]}, "2 unique names"),
])
def test_mixture_rejects_bad_input(kwargs, match):
  args = {"families": [quadratics.FixedDimQuadraticFamily(2)] * 2, **kwargs}
  with pytest.raises(ValueError) as info:
    tasks.TaskMixture(**args)
  assert match in str(info.value).splitlines()[0]  # gin may append a line


def test_mixture_rejects_non_families():
  with pytest.raises(TypeError, match="QuadraticTask"):
    tasks.TaskMixture([quadratics.QuadraticTask()])


# --- gin configs


@pytest.mark.parametrize("path", sorted(glob.glob(str(GIN_DIR / "*.gin"))),
                         ids=os.path.basename)
def test_gin_file_parses(path, clean_gin):
  gin.parse_config_files_and_bindings([path], [])
  assert "TaskMixture.families" in gin.config_str()


def test_demo_mixture_reaches_trainer_through_gin(data_dir, clean_gin):
  gin.parse_config_files_and_bindings(
      [str(GIN_DIR / "mix_cpu_demo.gin")],
      [f"mnist1d_datasets.data_dir = '{data_dir}'",
       "test_mixture._mixture_consumer.task_mixture = %TASK_MIXTURE"])
  mixture = _mixture_consumer()  # pylint: disable=no-value-for-parameter
  assert isinstance(mixture, tasks.TaskMixture)
  assert mixture.names == ("mnist1d_mlp", "quadratic10")
  np.testing.assert_allclose(mixture.weights, [0.7, 0.3])
  mlp, quad = mixture.families
  assert isinstance(mlp, tasks.MaskedMLPFamily) and mlp.max_width == 32
  assert next(mlp.datasets.train)["image"].shape == (32, 40)
  assert isinstance(quad, quadratics.FixedDimQuadraticFamily)



# --- benchmark


def test_step_time_prints_markdown_table(data_dir, clean_gin, capsys):
  step_time_app.cli([], [f"mnist1d_datasets.data_dir = '{data_dir}'"],
                    num_tasks=2, repeats=2)
  out = capsys.readouterr().out
  assert "| family | weight | params/task | compile s | step ms |" in out
  rows = [r for r in out.splitlines() if r.startswith("| mnist1d_mlp |")
          or r.startswith("| quadratic10 |")]
  assert len(rows) == 2
  assert all(float(r.split("|")[-2]) > 0 for r in rows)


def test_step_time_app_rejects_bad_input_in_one_line():
  app = subprocess.run(
      [sys.executable, "-m", "lopt_selftrain.apps.step_time", "--num_tasks=0"],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert app.returncode == 2
  assert app.stderr.strip().splitlines()[-1] == (
      "error: --num_tasks and --repeats must be >= 1, got 0 and 50")
