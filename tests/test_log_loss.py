"""The log meta-objective: same inner problems, log loss in lo's meta-loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learned_optimization.learned_optimizers import mlp_lopt
from learned_optimization.outer_trainers import truncation_schedule
from learned_optimization.tasks import quadratics

from lopt_selftrain import compat, population
from lopt_selftrain.tasks import log_loss

FAMILY = quadratics.FixedDimQuadraticFamily(6)
KEY = jax.random.PRNGKey(0)


def test_wrapped_tasks_are_the_same_problems_with_a_log_normalizer():
  wrapped = log_loss.LogMetaLossFamily(FAMILY)
  assert wrapped.name == FAMILY.name and wrapped.datasets is FAMILY.datasets
  cfg = wrapped.sample(KEY)
  np.testing.assert_array_equal(jax.tree_util.tree_leaves(cfg),
                                jax.tree_util.tree_leaves(FAMILY.sample(KEY)))
  task, plain = wrapped.task_fn(cfg), FAMILY.task_fn(cfg)
  init_key = jax.random.PRNGKey(1)
  params = task.init(init_key)
  np.testing.assert_array_equal(params, plain.init(init_key))
  loss, grad = jax.value_and_grad(task.loss)(params, KEY, None)
  plain_loss, plain_grad = jax.value_and_grad(plain.loss)(params, KEY, None)
  assert loss == plain_loss and loss > 1.0
  np.testing.assert_array_equal(grad, plain_grad)
  np.testing.assert_allclose(task.normalizer(loss), np.log(loss), rtol=1e-6)
  np.testing.assert_allclose(task.normalizer(jnp.asarray([0.0, -1.0])),
                             np.log(log_loss.LOG_FLOOR), rtol=1e-6)
  assert np.isnan(task.normalizer(jnp.nan))


def _first_step_meta_loss(meta_objective):
  config = population.EstimatorConfig(
      num_tasks=1, trunc_length=1, steps_per_jit=1, meta_objective=meta_objective,
      trunc_sched=truncation_schedule.ConstantTruncationSchedule(10))
  lopt = mlp_lopt.MLPLOpt(compute_summary=False)
  estimator = config.build(FAMILY, lopt)
  theta = lopt.init(KEY)
  weights = compat.worker_weights(theta, 0)
  unroll_state = estimator.init_worker_state(weights, KEY)
  out, _ = estimator.compute_gradient_estimate(weights, KEY, unroll_state,
                                               with_summary=False)
  return float(out.mean_loss)


def test_log_train_estimator_averages_log_losses():
  # One step of one fresh inner problem: the loss is that of its initial
  # parameters, identical in both antithetic halves, so the log objective's
  # meta-loss is exactly the log of the plain one's.
  plain = _first_step_meta_loss("train")
  assert plain > 1.0  # a quadratic far from its optimum: log(plain) != plain
  assert _first_step_meta_loss("log_train") == pytest.approx(np.log(plain),
                                                             rel=1e-5)


def test_unknown_estimator_objective_is_refused():
  with pytest.raises(ValueError, match="log_train"):
    population.EstimatorConfig(meta_objective="log")
