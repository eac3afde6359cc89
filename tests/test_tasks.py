"""Tests for lopt_selftrain.tasks: data, families, mixture, gin configs, benchmark."""

import glob
import os
import pathlib
import random
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from learned_optimization import training
from learned_optimization.tasks import base as tasks_base
from learned_optimization.tasks import quadratics, task_augmentation
from learned_optimization.tasks.parametric import image_conv

from lopt_selftrain import tasks
from lopt_selftrain.tasks import data, step_time

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "tasks"


@gin.configurable(module="test_tasks")
def _mixture_consumer(task_mixture):
  """Stands in for the trainer, which receives the mixture through gin."""
  return task_mixture


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
  """fashion_mnist at 8x8 and cifar10 at 32x32 from tfds' mock (no download)."""
  tfds_dir = str(tmp_path_factory.mktemp("tfds"))
  with tfds.testing.mock_data(num_examples=256):
    return {
        "fashion_mnist": tasks.tfds_image_datasets(
            "fashion_mnist", batch_size=16, data_dir=tfds_dir, image_size=(8, 8)),
        "cifar10": tasks.tfds_image_datasets(
            "cifar10", batch_size=16, data_dir=tfds_dir),
    }


# --- embedded MNIST-1D data


def test_mnist1d_splits_batches_and_seeding(data_dir):
  ds = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  assert ds.extra_info["num_examples"] == {
      "train": 3200, "inner_valid": 400, "outer_valid": 400, "test": 1000}
  assert ds.extra_info["num_classes"] == 10
  for split in data.SPLITS:
    batch = next(ds.split(split))
    assert batch["image"].shape == (32, 40) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < 10
  assert ds.abstract_batch["image"].shape == (32, 40)
  # Infinite: more batches than one epoch of outer_valid (400 // 32 = 12).
  assert len([next(ds.outer_valid) for _ in range(30)]) == 30

  again = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  same = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  other = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir, seed=1)
  first = next(again.train)
  np.testing.assert_array_equal(first["image"], next(same.train)["image"])
  assert not np.array_equal(first["image"], next(other.train)["image"])


def test_mnist1d_validation_carved_from_train(data_dir):
  arrays = tasks.load_mnist1d(data_dir=data_dir)
  x, y = arrays["x"], arrays["y"]
  ds = data.array_datasets((x, y), (arrays["x_test"], arrays["y_test"]),
                           batch_size=400, num_classes=10, name="m")
  rows = {split: {r.tobytes() for r in next(ds.split(split))["image"]}
          for split in ("inner_valid", "outer_valid")}
  train_rows = set()
  for _ in range(8):  # one epoch of the 3200 train examples
    train_rows |= {r.tobytes() for r in next(ds.train)["image"]}
  assert len(train_rows) == 3200
  assert not rows["inner_valid"] & rows["outer_valid"]
  assert not (rows["inner_valid"] | rows["outer_valid"]) & train_rows
  assert (rows["inner_valid"] | rows["outer_valid"]) <= {r.tobytes() for r in x}


def test_mnist1d_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
  np.random.seed(7)
  random.seed(7)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(7)
  random.seed(7)
  first = tasks.load_mnist1d(num_samples=500, data_dir=str(tmp_path))
  # mnist1d reseeds the global RNGs; loading must leave them as they were.
  assert np.random.rand() == expected_np and random.random() == expected_py
  assert os.listdir(tmp_path) == ["mnist1d_n500_seed42.npz"]
  assert first["x"].shape == (400, 40) and first["x_test"].shape == (100, 40)

  def fail(*args):
    raise AssertionError("cache was not used")

  monkeypatch.setattr(data, "_generate_mnist1d", fail)
  second = tasks.load_mnist1d(num_samples=500, data_dir=str(tmp_path))
  assert second.keys() == first.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
    assert first[key].dtype == second[key].dtype


def test_mnist1d_default_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  assert tasks.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("LOPT_DATA_DIR")
  assert tasks.default_data_dir().endswith(os.path.join(".cache", "lopt_selftrain"))


def test_mnist1d_is_real_data(data_dir):
  from sklearn.neural_network import MLPClassifier  # pylint: disable=g-import-not-at-top

  arrays = tasks.load_mnist1d(data_dir=data_dir)
  clf = MLPClassifier((100,), max_iter=200, random_state=0)
  with pytest.warns(Warning):  # sklearn warns it has not fully converged
    clf.fit(arrays["x"], arrays["y"])
  assert clf.score(arrays["x_test"], arrays["y_test"]) > 0.4  # chance is 0.1


# --- the masked MLP family


def test_masked_mlp_family_shares_shapes_and_varies_architecture(data_dir):
  family = tasks.MaskedMLPFamily(
      tasks.mnist1d_datasets(batch_size=16, data_dir=data_dir), max_width=32,
      min_width=4, max_depth=3)
  assert family.name == "mlp_mnist1d_w32_d3"
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  cfgs = jax.jit(jax.vmap(family.sample))(keys)
  assert 4 <= cfgs["width"].min() and cfgs["width"].max() <= 32
  assert len(np.unique(cfgs["width"])) > 5
  assert set(np.unique(cfgs["depth"])) == {1, 2, 3}
  assert set(np.unique(cfgs["activation"])) == {0, 1, 2, 3}
  assert 0.5 <= cfgs["init_scale"].min() and cfgs["init_scale"].max() <= 2.0
  params = jax.jit(jax.vmap(lambda c, k: family.task_fn(c).init(k)))(cfgs, keys)
  assert params["hidden_2"]["w"].shape == (64, 32, 32)
  assert params["out"]["w"].shape == (64, 32, 10)


def test_masked_units_and_skipped_layers_are_inert(data_dir):
  family = tasks.MaskedMLPFamily(
      tasks.mnist1d_datasets(batch_size=16, data_dir=data_dir), max_width=16,
      max_depth=3)
  cfg = {"width": jnp.int32(5), "depth": jnp.int32(2),
         "activation": jnp.int32(3), "init_scale": jnp.float32(1.0)}
  task = family.task_fn(cfg)
  params = task.init(jax.random.PRNGKey(1))
  batch = next(family.datasets.train)
  loss_and_grad = jax.jit(jax.value_and_grad(task.loss))
  loss, grads = loss_and_grad(params, None, batch)
  assert np.all(params["hidden_0"]["w"][:, 5:] == 0)
  for layer in ("hidden_0", "hidden_1"):
    assert np.all(grads[layer]["w"][:, 5:] == 0)
    assert np.all(grads[layer]["b"][5:] == 0)
    assert np.any(grads[layer]["w"][:, :5] != 0)
  assert np.all(grads["hidden_2"]["w"] == 0)  # depth 2: third layer skipped
  assert np.all(grads["out"]["w"][5:] == 0)
  noisy = jax.tree_util.tree_map(lambda x: x, params)
  noisy["hidden_1"]["w"] = noisy["hidden_1"]["w"].at[:, 5:].set(3.0)
  noisy["hidden_2"]["w"] = jnp.full_like(noisy["hidden_2"]["w"], 3.0)
  noisy_loss, _ = loss_and_grad(noisy, None, batch)
  assert float(noisy_loss) == pytest.approx(float(loss), rel=1e-6)


def test_masked_mlp_family_rejects_bad_config(data_dir):
  ds = tasks.mnist1d_datasets(batch_size=16, data_dir=data_dir)
  with pytest.raises(ValueError, match="activations"):
    tasks.MaskedMLPFamily(ds, activations=("relu", "swishy"))
  with pytest.raises(ValueError, match="min_width"):
    tasks.MaskedMLPFamily(ds, max_width=4, min_width=8)


# --- every family: finite, and hand-designed Adam makes progress


def _paper_family(scope, cls, gin_file="mix_paper.gin"):
  """Builds one data-free family of a mix (mix_paper.gin) from its gin scope."""

  def build(data_dir):
    gin.parse_config_files_and_bindings(
        [str(GIN_DIR / gin_file)],
        [f"mnist1d_datasets.data_dir = '{data_dir}'"])
    with gin.config_scope(scope):
      return cls()

  return build


def _broad_family(scope, cls):
  """Builds one family of mix_broad.gin from its gin scope."""
  return _paper_family(scope, cls, "mix_broad.gin")


FAMILIES = {
    "quadratic10": lambda d: quadratics.FixedDimQuadraticFamily(10),
    "single_task_quadratic": lambda d: tasks_base.single_task_to_family(
        quadratics.QuadraticTask(), name="quad"),
    "mnist1d_default": lambda d: tasks.MaskedMLPFamily(
        tasks.mnist1d_datasets(batch_size=32, data_dir=d)),
    "paper_mnist1d_reparam": _paper_family(
        "reparam", task_augmentation.ReparamWeightsFamily),
    "paper_quadratic100": _paper_family(
        "q100", quadratics.FixedDimQuadraticFamily),
    "conv1d_default": lambda d: tasks.MaskedConv1DFamily(
        tasks.mnist1d_datasets(batch_size=32, data_dir=d)),
    "cond_quadratic_noisy": lambda d: tasks.ConditionedQuadraticFamily(
        20, (1.0, 10.0), noise_std=0.1),
    "broad_conv": _broad_family("conv", tasks.MaskedConv1DFamily),
    "broad_deep_mlp": _broad_family("deep", tasks.MaskedMLPFamily),
    "broad_reparam": _broad_family(
        "reparam", task_augmentation.ReparamWeightsFamily),
}
IMAGE_FAMILIES = {
    "fmnist8_masked_mlp": lambda ds: tasks.MaskedMLPFamily(ds["fashion_mnist"]),
    "fmnist8_lo_conv": lambda ds: image_conv.ParametricImageConv(
        ds["fashion_mnist"], 10, [4, 8], [3, 3], [1, 2]),
}


def _check_family_trains(family, num_tasks=3, steps=50):
  """Finite sample/init/loss/grad, and Adam on a fixed batch cuts the loss."""
  init, step = step_time.vmapped_inner_step(family, optax.adam(0.03))
  keys = jax.random.split(jax.random.PRNGKey(0), num_tasks)
  state = init(keys)
  batch = training.vec_get_batch(family, num_tasks)
  batch_axis = None if family.datasets is None else 0
  grads = jax.jit(jax.vmap(
      lambda c, p, k, b: jax.grad(family.task_fn(c).loss)(p, k, b),
      in_axes=(0, 0, 0, batch_axis)))(state[0], state[1], keys, batch)
  for leaf in jax.tree_util.tree_leaves((state[:2], grads)):
    assert np.all(np.isfinite(leaf))
  losses = []
  for _ in range(steps):
    state, loss = step(state, keys, batch)
    losses.append(np.asarray(loss))
  assert np.all(np.isfinite(losses))
  assert np.all(losses[-1] < losses[0]), (losses[0], losses[-1])
  assert losses[-1].mean() < 0.7 * losses[0].mean(), (losses[0], losses[-1])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_trains(name, data_dir, clean_gin):
  _check_family_trains(FAMILIES[name](data_dir))


@pytest.mark.parametrize("name", sorted(IMAGE_FAMILIES))
def test_image_family_trains_on_mock_tfds(name, mock_image_datasets):
  _check_family_trains(IMAGE_FAMILIES[name](mock_image_datasets))


@pytest.mark.slow
def test_masked_mlp_family_under_lo_truncated_pes(data_dir):
  """The vmap constraint that matters: lo's PES unrolls our family."""
  from learned_optimization.learned_optimizers import mlp_lopt  # pylint: disable=g-import-not-at-top
  from learned_optimization.outer_trainers import truncation_schedule  # pylint: disable=g-import-not-at-top

  from lopt_selftrain import compat  # pylint: disable=g-import-not-at-top

  family = tasks.MaskedMLPFamily(
      tasks.mnist1d_datasets(batch_size=16, data_dir=data_dir), max_width=16)
  lopt = mlp_lopt.MLPLOpt(hidden_size=4)
  estimator = compat.make_gradient_estimator(
      "pes", family, lopt, truncation_schedule.ConstantTruncationSchedule(8),
      num_tasks=2, trunc_length=4, steps_per_jit=2, std=0.01)
  weights = compat.worker_weights(lopt.init(jax.random.PRNGKey(0)))
  state = estimator.init_worker_state(weights, jax.random.PRNGKey(1))
  for i in range(2):
    out, _ = estimator.compute_gradient_estimate(
        weights, jax.random.PRNGKey(2 + i), state, with_summary=False)
    state = out.unroll_state
    assert np.isfinite(out.mean_loss)
    for leaf in jax.tree_util.tree_leaves(out.grad):
      assert np.all(np.isfinite(leaf))


def test_conv1d_masked_channels_and_skipped_layers_are_inert(data_dir):
  family = tasks.MaskedConv1DFamily(
      tasks.mnist1d_datasets(batch_size=8, data_dir=data_dir), max_channels=8,
      min_channels=2, max_depth=3)
  cfg = {"channels": jnp.int32(3), "depth": jnp.int32(2),
         "activation": jnp.int32(0), "init_scale": jnp.float32(1.0)}
  task = family.task_fn(cfg)
  params = task.init(jax.random.PRNGKey(0))
  batch = next(family.datasets.train)
  grad = jax.grad(task.loss)(params, jax.random.PRNGKey(1), batch)
  assert np.all(np.asarray(params["conv_0"]["w"])[..., 3:] == 0)
  assert np.all(np.asarray(grad["conv_0"]["w"])[..., 3:] == 0)
  assert np.all(np.asarray(grad["conv_2"]["w"]) == 0)  # depth 2: layer 2 skipped
  assert np.any(np.asarray(grad["conv_1"]["w"]) != 0)


def test_conditioned_quadratic_samples_condition_numbers():
  family = tasks.ConditionedQuadraticFamily(50, (10.0, 1000.0))
  cfgs = jax.vmap(family.sample)(jax.random.split(jax.random.PRNGKey(0), 64))
  kappa = np.asarray(cfgs["curvature"].max(1) / cfgs["curvature"].min(1))
  assert kappa.min() >= 1.0 and kappa.max() <= 1000.0 * 1.001
  assert kappa.max() / kappa.min() > 5  # the condition number varies per task
  task = family.task_fn(jax.tree_util.tree_map(lambda x: x[0], cfgs))
  key = jax.random.PRNGKey(1)
  assert 0.1 < task.loss(task.init(key), key, ()) < 10
  with pytest.raises(ValueError, match="condition"):
    tasks.ConditionedQuadraticFamily(10, (0.5, 10.0))


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
  scikit-learn's digits (reserved for lopt_selftrain.heldout)."""
  import sklearn.datasets  # pylint: disable=g-import-not-at-top

  from lopt_selftrain import config, heldout, train  # noqa: F401  (gin registrations)

  def forbidden(*args, **kwargs):
    raise AssertionError("a meta-training mixture loaded a held-out dataset")

  monkeypatch.setattr(sklearn.datasets, "load_digits", forbidden)
  monkeypatch.setattr(heldout, "sklearn_arrays", forbidden)
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
       "test_tasks._mixture_consumer.task_mixture = %TASK_MIXTURE"])
  mixture = _mixture_consumer()  # pylint: disable=no-value-for-parameter
  assert isinstance(mixture, tasks.TaskMixture)
  assert mixture.names == ("mnist1d_mlp", "quadratic10")
  np.testing.assert_allclose(mixture.weights, [0.7, 0.3])
  mlp, quad = mixture.families
  assert isinstance(mlp, tasks.MaskedMLPFamily) and mlp.max_width == 32
  assert next(mlp.datasets.train)["image"].shape == (32, 40)
  assert isinstance(quad, quadratics.FixedDimQuadraticFamily)


# --- tfds


def test_tfds_image_datasets_from_mock(mock_image_datasets):
  fmnist, cifar = mock_image_datasets["fashion_mnist"], mock_image_datasets["cifar10"]
  assert fmnist.extra_info["num_classes"] == 10
  batch = next(fmnist.train)
  assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["label"].dtype == np.int32 and batch["label"].max() < 10
  assert next(cifar.test)["image"].shape == (16, 32, 32, 3)
  assert fmnist.abstract_batch["image"].shape == (16, 8, 8, 1)


def test_tfds_missing_dataset_names_dataset_and_dir(tmp_path):
  with pytest.raises(tasks.DatasetNotFoundError) as info:
    tasks.tfds_image_datasets("fashion_mnist", data_dir=str(tmp_path))
  assert isinstance(info.value, ValueError)
  line = str(info.value).splitlines()[0]
  assert "fashion_mnist" in line and str(tmp_path) in line
  assert "tfds build fashion_mnist" in line


# --- benchmark


def test_step_time_prints_markdown_table(data_dir, clean_gin, capsys):
  step_time.cli([], [f"mnist1d_datasets.data_dir = '{data_dir}'"],
                num_tasks=2, repeats=2)
  out = capsys.readouterr().out
  assert "| family | weight | params/task | compile s | step ms |" in out
  rows = [r for r in out.splitlines() if r.startswith("| mnist1d_mlp |")
          or r.startswith("| quadratic10 |")]
  assert len(rows) == 2
  assert all(float(r.split("|")[-2]) > 0 for r in rows)


def test_step_time_app_rejects_bad_input_in_one_line():
  app = subprocess.run(
      [sys.executable, "-m", "lopt_selftrain.tasks.step_time", "--num_tasks=0"],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert app.returncode == 2
  assert app.stderr.strip().splitlines()[-1] == (
      "error: --num_tasks and --repeats must be >= 1, got 0 and 50")
