"""The meta-loss behind every PBT decision and every reported number, tested
directly: its definition (mean loss over the run / initial loss), common random
numbers across members, the mixture weighting, and fixed evaluation tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base
from learned_optimization.tasks.quadratics import FixedDimQuadraticFamily

from lopt_selftrain import evaluation, population
from lopt_selftrain.tasks import TaskMixture

STEPS = 4
CONFIG = evaluation.EvalConfig(num_tasks=3, num_steps=STEPS)
KEY = jax.random.PRNGKey(0)
QUADRATIC = (FixedDimQuadraticFamily(4),)


class AsLearned(lopt_base.LearnedOptimizer):
  """A hand-designed lo optimizer whose "weights" are its learning rate.

  With SGD the effect on lo's quadratic (loss |t - p|^2) is known in closed
  form, whatever the task: each step scales the loss by (1 - 2 lr)^2. With
  Adam (steps of size ~lr whatever the gradient) it depends on the task.
  """

  def __init__(self, optimizer=opt_base.SGD):
    self.optimizer = optimizer

  def init(self, key):
    del key
    return {"lr": jnp.asarray(0.0)}

  def opt_fn(self, theta, is_training=False):
    del is_training
    return self.optimizer(theta["lr"])


SGD, ADAM = AsLearned(), AsLearned(opt_base.Adam)


def _meta_loss(lrs, families=QUADRATIC, weights=(1.0,), key=KEY,
               learned_opt=SGD):
  thetas = {"lr": jnp.asarray(lrs, jnp.float32)}
  meta_loss, per_family = evaluation.evaluate_population(
      learned_opt, tuple(families), np.asarray(weights), thetas, key, CONFIG)
  return np.asarray(meta_loss), np.asarray(per_family)


def test_an_optimizer_that_does_nothing_scores_one():
  meta_loss, per_family = _meta_loss([0.0, 0.0])
  np.testing.assert_allclose(meta_loss, 1.0, rtol=1e-6)
  np.testing.assert_allclose(per_family, 1.0, rtol=1e-6)


def test_meta_loss_is_the_mean_loss_over_the_run_relative_to_the_first():
  # lr 0.5 on |t - p|^2 lands on t in one step: losses L0, 0, 0, 0.
  meta_loss, _ = _meta_loss([0.5])
  np.testing.assert_allclose(meta_loss, [1 / STEPS], rtol=1e-5)
  # lr 0.25 halves the distance each step: losses L0 * 4^-t.
  meta_loss, _ = _meta_loss([0.25])
  expected = np.mean([0.25 ** t for t in range(STEPS)])
  np.testing.assert_allclose(meta_loss, [expected], rtol=1e-5)


def test_normalized_meta_loss_of_known_curves():
  losses = jnp.asarray([[[4.0, 2.0, 2.0, 0.0], [2.0, 2.0, 2.0, 2.0]]])
  np.testing.assert_allclose(evaluation.normalized_meta_loss(losses),
                             [(0.5 + 1.0) / 2])


def test_identical_members_get_identical_meta_loss():
  meta_loss, per_family = _meta_loss([0.1, 0.3, 0.1, 0.1])
  assert meta_loss[0] == meta_loss[2] == meta_loss[3]  # bit for bit
  assert meta_loss[1] != meta_loss[0]
  assert per_family[0, 0] == per_family[0, 2]


def test_mixture_meta_loss_is_the_weighted_mean_of_the_families():
  families = (FixedDimQuadraticFamily(4), FixedDimQuadraticFamily(8))
  lrs = [0.05, 0.2]
  meta_loss, per_family = _meta_loss(lrs, families, (0.7, 0.3))
  assert per_family.shape == (2, 2)
  np.testing.assert_allclose(meta_loss, 0.7 * per_family[0]
                             + 0.3 * per_family[1], rtol=1e-6)
  # The weights only weigh: each family's own meta-loss does not move.
  other, other_per_family = _meta_loss(lrs, families, (0.2, 0.8))
  np.testing.assert_array_equal(other_per_family, per_family)
  np.testing.assert_allclose(other, 0.2 * per_family[0] + 0.8 * per_family[1],
                             rtol=1e-6)


def test_the_key_decides_the_tasks():
  a, _ = _meta_loss([0.1], learned_opt=ADAM)
  b, _ = _meta_loss([0.1], key=jax.random.PRNGKey(1), learned_opt=ADAM)
  assert a != b


@pytest.fixture(scope="module")
def trainer():
  return population.PopulationTrainer(
      learned_opt=ADAM,
      task_mixture=TaskMixture(list(QUADRATIC)),
      outer_opt=opt_base.SGD(0.0), population_size=2, eval_config=CONFIG,
      seed=5)


def test_evaluation_tasks_stay_fixed_across_rounds(trainer):
  state = trainer.init()
  thetas = {"lr": jnp.asarray([0.1, 0.2])}
  state = state.replace(outer_opt_state=state.outer_opt_state._replace(
      params=thetas) if hasattr(state.outer_opt_state, "_replace") else
      state.outer_opt_state.replace(params=thetas))
  first, first_family = trainer.evaluate(state)
  # A later round: another step, key, meta-loss and unrolls; same weights.
  later = state.replace(step=jnp.asarray(50, jnp.int32),
                        key=jax.random.PRNGKey(9),
                        meta_loss=jnp.asarray([0.5, 0.7]))
  again, again_family = trainer.evaluate(later)
  np.testing.assert_array_equal(again, first)
  np.testing.assert_array_equal(again_family, first_family)
  # The same weights evaluated by the trainer of another seed: other tasks.
  other_seed = population.PopulationTrainer(
      learned_opt=trainer.learned_opt, task_mixture=trainer.task_mixture,
      outer_opt=trainer.outer_opt, population_size=2, eval_config=CONFIG,
      seed=6)
  assert not np.array_equal(other_seed.evaluate(state)[0], first)


def test_log_final_meta_loss_is_the_log_of_the_final_loss_ratio():
  # lr 0.25 on |t - p|^2: losses L0 * 4^-t; the final 10% of 4 steps is the
  # last one, so every task scores log(4^-3) whatever its L0.
  config = evaluation.EvalConfig(num_tasks=3, num_steps=STEPS,
                                 meta_objective="log_final")
  meta_loss, per_family = evaluation.evaluate_population(
      SGD, QUADRATIC, np.asarray([1.0]), {"lr": jnp.asarray([0.25, 0.0])},
      KEY, config)
  np.testing.assert_allclose(meta_loss, [-3 * np.log(4.0), 0.0], atol=1e-5)
  np.testing.assert_allclose(per_family[0], meta_loss)


def test_log_meta_loss_floors_zero_and_keeps_divergence_visible():
  losses = jnp.asarray([[[2.0, 0.0], [2.0, 1.0]], [[2.0, jnp.nan], [2.0, 1.0]]])
  got = np.asarray(evaluation.normalized_meta_loss(losses, 0.5, log=True))
  np.testing.assert_allclose(got[0], (np.log(1e-10) + np.log(0.5)) / 2,
                             rtol=1e-6)
  assert np.isnan(got[1])
