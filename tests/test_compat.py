"""The compat seam: restored names behave like their modern equivalents, existing
attributes are never replaced, lo imports, and one lo PES step runs."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learned_optimization.learned_optimizers import mlp_lopt
from learned_optimization.outer_trainers import truncation_schedule
from learned_optimization.tasks import quadratics

from lopt_selftrain import compat


def test_tree_multimap_maps_two_trees():
  a = {"x": jnp.arange(3.0), "y": (jnp.ones(2),)}
  b = {"x": jnp.ones(3), "y": (jnp.full(2, 2.0),)}
  out = jax.tree_multimap(lambda u, v: u * 10 + v, a, b)
  np.testing.assert_allclose(out["x"], [1.0, 11.0, 21.0])
  np.testing.assert_allclose(out["y"][0], [12.0, 12.0])


def test_tree_helpers_match_tree_util():
  tree = {"a": jnp.zeros(2), "b": [jnp.ones(1), 3.0]}
  leaves, treedef = jax.tree_flatten(tree)
  assert leaves == jax.tree_util.tree_leaves(tree) == jax.tree_leaves(tree)
  assert jax.tree_structure(tree) == jax.tree_util.tree_structure(tree)
  rebuilt = jax.tree_unflatten(treedef, leaves)
  assert jax.tree_util.tree_structure(rebuilt) == treedef
  assert jax.tree_map(lambda x: x, 1.0) == 1.0


def test_shaped_array_and_numpy_product():
  aval = jax.ShapedArray(shape=(2, 3), dtype=jnp.float32)
  assert aval.shape == (2, 3) and aval.dtype == jnp.float32
  assert np.product([2, 3, 4]) == 24
  assert hasattr(jax.lib.xla_client, "XlaBuilder") or hasattr(
      jax.lib.xla_client, "Client")


def test_existing_attribute_is_never_replaced(monkeypatch):
  sentinel = object()
  monkeypatch.setattr(jax, "tree_multimap", sentinel, raising=False)
  monkeypatch.setattr(np, "product", sentinel, raising=False)
  added = compat.restore_legacy_names()
  assert jax.tree_multimap is sentinel and np.product is sentinel
  assert "jax.tree_multimap" not in added and "numpy.product" not in added


def test_restore_is_idempotent():
  compat.restore_legacy_names()
  assert compat.restore_legacy_names() == []


def test_restore_adds_a_missing_name(monkeypatch):
  monkeypatch.delattr(np, "product", raising=False)
  assert "numpy.product" in compat.restore_legacy_names()
  assert np.product([3, 5]) == 15


@pytest.mark.parametrize("module", [
    "learned_optimization.learned_optimizers.base",
    "learned_optimization.learned_optimizers.mlp_lopt",
    "learned_optimization.learned_optimizers.nn_adam",
    "learned_optimization.learned_optimizers.rnn_mlp_lopt",
    "learned_optimization.optimizers.base",
    "learned_optimization.outer_trainers.gradient_learner",
    "learned_optimization.outer_trainers.truncated_pes",
    "learned_optimization.outer_trainers.truncated_es",
    "learned_optimization.outer_trainers.full_es",
    "learned_optimization.outer_trainers.truncation_schedule",
    "learned_optimization.tasks.base",
    "learned_optimization.tasks.quadratics",
    "learned_optimization.tasks.datasets.base",
    "learned_optimization.training",
])
def test_lo_modules_import(module):
  importlib.import_module(module)


@pytest.mark.parametrize("kind,length", [("pes", "trunc_length"),
                                         ("es", "unroll_length")])
def test_one_lo_estimator_step_gives_finite_grad_shaped_like_theta(kind, length):
  lopt = mlp_lopt.MLPLOpt()
  est = compat.make_gradient_estimator(
      kind, quadratics.FixedDimQuadraticFamily(10), lopt,
      truncation_schedule.ConstantTruncationSchedule(20), num_tasks=4,
      steps_per_jit=5, std=0.01, **{length: 5})
  theta = lopt.init(jax.random.PRNGKey(0))
  weights = compat.worker_weights(theta)
  state = est.init_worker_state(weights, jax.random.PRNGKey(1))
  out, _ = est.compute_gradient_estimate(weights, jax.random.PRNGKey(2), state,
                                         with_summary=False)
  assert jax.tree_util.tree_structure(out.grad) == jax.tree_util.tree_structure(
      theta)
  for g, t in zip(jax.tree_util.tree_leaves(out.grad),
                  jax.tree_util.tree_leaves(theta)):
    assert g.shape == t.shape
    assert np.all(np.isfinite(g))
  assert np.isfinite(out.mean_loss)
  assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(out.grad))


def test_unknown_estimator_kind_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown gradient estimator 'sgd'"):
    compat.make_gradient_estimator("sgd", None, None, None, 1)


def test_estimator_api_is_detected_by_capability():
  class HeadStyle:
    def __init__(self, truncated_step, trunc_length=10):
      pass

  class OldStyle:
    def __init__(self, task_family, learned_opt, trunc_sched, num_tasks):
      pass

  assert compat.takes_truncated_step(HeadStyle)
  assert not compat.takes_truncated_step(OldStyle)
