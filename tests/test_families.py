"""Tests for the task families (masked MLP, conv1d, conditioned quadratic)."""

import pathlib

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from learned_optimization import training
from learned_optimization.tasks import base as tasks_base
from learned_optimization.tasks import quadratics, task_augmentation
from learned_optimization.tasks.parametric import image_conv

from lopt_selftrain import tasks
from lopt_selftrain.tasks import step_time

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin_configs" / "tasks"


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
    "tabular_wide": _paper_family("tab_wide", tasks.MaskedMLPFamily,
                                  "mix_tabular.gin"),
    "tabular_generated": _paper_family("tabgen", tasks.GeneratedTabularFamily,
                                       "mix_generated.gin"),
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


def _generated_task(seed, **kwargs):
  family = tasks.GeneratedTabularFamily(**kwargs)
  cfg = family.sample(jax.random.PRNGKey(seed))
  return family, cfg, family.task_fn(cfg)


def test_generated_tabular_task_owns_a_fixed_standardised_set():
  """Each task is one set: rows depend on the example index only, active
  features are standardised over the set, the rest are zero, labels < c."""
  _, cfg, task = _generated_task(0, examples_range=(4000, 4000),
                                 features_range=(5, 12), max_classes=5)
  n, f, c = (int(cfg[k]) for k in ("examples", "features", "classes"))
  x, y = task.rows(jnp.arange(n))
  x, y = np.asarray(x), np.asarray(y)
  assert x.shape == (n, 12) and not np.any(x[:, f:])
  np.testing.assert_allclose(x[:, :f].mean(0), 0.0, atol=0.1)
  np.testing.assert_allclose(x[:, :f].std(0), 1.0, atol=0.1)
  assert set(np.unique(y)) == set(range(c))
  again_x, again_y = task.rows(jnp.array([7, 3, 7]))
  np.testing.assert_array_equal(np.asarray(again_x), x[[7, 3, 7]])
  np.testing.assert_array_equal(np.asarray(again_y), y[[7, 3, 7]])
  # Another task is another set.
  other_x, _ = _generated_task(1, examples_range=(4000, 4000),
                               features_range=(5, 12), max_classes=5)[2].rows(
                                   jnp.arange(3))
  assert not np.allclose(np.asarray(other_x), x[:3])


def test_generated_tabular_loss_counts_only_active_classes():
  """Logits of classes >= c are masked: a zero network's loss is log(c)."""
  family, cfg, task = _generated_task(2, max_classes=10)
  params = jax.tree_util.tree_map(jnp.zeros_like,
                                  task.init(jax.random.PRNGKey(0)))
  loss = task.loss(params, jax.random.PRNGKey(1), None)
  np.testing.assert_allclose(loss, np.log(int(cfg["classes"])), rtol=1e-5)
  assert family.datasets is None and family.input_dim == 32


@pytest.mark.parametrize("kwargs", [
    dict(examples_range=(0, 10)), dict(features_range=(8, 4)),
    dict(max_classes=1), dict(max_label_noise=1.0),
    dict(class_sep_range=(0.0, 1.0))])
def test_generated_tabular_family_rejects_bad_config(kwargs):
  with pytest.raises(ValueError, match="GeneratedTabularFamily needs"):
    tasks.GeneratedTabularFamily(**kwargs)
