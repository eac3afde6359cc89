"""The self-update optimizer: a learned optimizer computing its own update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.learned_optimizers import mlp_lopt

from lopt_selftrain.self_update import SelfUpdate


def _grad_like(theta, seed=0):
  leaves, treedef = jax.tree_util.tree_flatten(theta)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _delta(a, b):
  return jax.tree_util.tree_map(lambda x, y: x - y, a, b)


def test_update_uses_the_current_weights():
  """Same gradient, different current theta -> a different learned step."""
  lopt = mlp_lopt.MLPLOpt(step_mult=0.1)
  opt = SelfUpdate(lopt)
  grad = _grad_like(lopt.init(jax.random.PRNGKey(0)))
  steps = []
  for seed in (1, 2):
    theta = lopt.init(jax.random.PRNGKey(seed))
    new = opt.get_params(opt.update(opt.init(theta), grad, loss=1.0))
    steps.append(_delta(new, theta))
  diff = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), *steps)
  assert max(jax.tree_util.tree_leaves(diff)) > 1e-6


def test_teacher_weights_compute_the_step_instead_of_self():
  lopt = mlp_lopt.MLPLOpt(step_mult=0.1)
  opt = SelfUpdate(lopt)
  theta = lopt.init(jax.random.PRNGKey(0))
  teacher = lopt.init(jax.random.PRNGKey(1))
  grad = _grad_like(theta)
  state = opt.init(theta)
  by_self = opt.get_params(opt.update(state, grad, loss=1.0))
  by_self_explicit = opt.get_params(opt.update(state, grad, loss=1.0,
                                               teacher_theta=theta))
  by_teacher = opt.get_params(opt.update(state, grad, loss=1.0,
                                         teacher_theta=teacher))
  jax.tree_util.tree_map(np.testing.assert_array_equal, by_self,
                         by_self_explicit)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(by_self), jax.tree_util.tree_leaves(by_teacher)))


def test_step_scale_multiplies_the_learned_step():
  lopt = mlp_lopt.MLPLOpt(step_mult=0.1)
  theta = lopt.init(jax.random.PRNGKey(0))
  grad = _grad_like(theta)
  full = SelfUpdate(lopt, step_scale=1.0)
  tenth = SelfUpdate(lopt, step_scale=0.1)
  d_full = _delta(full.get_params(full.update(full.init(theta), grad, 1.0)), theta)
  d_tenth = _delta(tenth.get_params(tenth.update(tenth.init(theta), grad, 1.0)),
                   theta)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a * 0.1, b, rtol=1e-4, atol=1e-7),
      d_full, d_tenth)


def test_max_step_rms_shrinks_only_large_tensor_steps_keeping_direction():
  lopt = mlp_lopt.MLPLOpt(step_mult=0.1)
  theta = lopt.init(jax.random.PRNGKey(0))
  grad = _grad_like(theta)
  free = SelfUpdate(lopt, step_scale=1.0)
  d_free = _delta(free.get_params(free.update(free.init(theta), grad, 1.0)), theta)
  rms = lambda x: float(jnp.sqrt(jnp.mean(jnp.square(x))))  # noqa: E731
  rmss = sorted(rms(x) for x in jax.tree_util.tree_leaves(d_free))
  cap = rmss[len(rmss) // 2]  # some tensors above the cap, some below
  capped = SelfUpdate(lopt, step_scale=1.0, max_step_rms=cap)
  d_cap = _delta(capped.get_params(capped.update(capped.init(theta), grad, 1.0)),
                 theta)
  for a, b in zip(jax.tree_util.tree_leaves(d_free),
                  jax.tree_util.tree_leaves(d_cap)):
    if rms(a) <= cap:
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8)
    else:
      assert rms(b) == pytest.approx(cap, rel=1e-3)
      np.testing.assert_allclose(b * (rms(a) / cap), a, rtol=1e-3, atol=1e-7)


def test_gradient_following_lopt_applied_to_itself_reduces_a_quadratic():
  """LearnableSGD's weight is its log learning rate; let it descend
  f(theta) = 0.5 * (theta - target)^2 with steps it computes itself."""
  lopt = lopt_base.LearnableSGD(initial_lr=0.3)
  opt = SelfUpdate(lopt)
  theta = lopt.init(jax.random.PRNGKey(0))
  target = jax.tree_util.tree_map(lambda x: x + 1.0, theta)  # lr stays < 1

  def f(t):
    return sum(0.5 * jnp.sum((a - b) ** 2) for a, b in zip(
        jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(target)))

  state = opt.init(theta)
  losses = []
  update = jax.jit(opt.update)
  for _ in range(20):
    loss, grad = jax.value_and_grad(f)(opt.get_params(state))
    losses.append(float(loss))
    state = update(state, grad, loss)
  assert losses[-1] < 0.05 * losses[0]
  assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:]))


def test_plugs_into_lo_gradient_learner_as_theta_opt():
  from learned_optimization.outer_trainers import gradient_learner as gl
  lopt = mlp_lopt.MLPLOpt(step_mult=0.1)
  learner = gl.GradientLearner(lopt, SelfUpdate(lopt, step_scale=0.01))
  state = learner.init(jax.random.PRNGKey(0))
  weights = learner.get_state_for_worker(state)
  grad = _grad_like(weights.theta)
  agg = gl.AggregatedGradient(theta_grads=grad, theta_model_state=None,
                              mean_loss=jnp.asarray(1.0))
  # lo HEAD splits the key unconditionally (0.0.1 accepts None): pass one, as
  # lo's own training loops do.
  next_state, _ = learner.update(state, [agg], key=jax.random.PRNGKey(1))
  new_theta = learner.get_state_for_worker(next_state).theta
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(new_theta),
      jax.tree_util.tree_leaves(weights.theta)))


def test_nonpositive_step_scale_is_rejected():
  with pytest.raises(ValueError, match="step_scale"):
    SelfUpdate(None, step_scale=0.0)
  with pytest.raises(ValueError, match="max_step_rms"):
    SelfUpdate(None, max_step_rms=-1.0)
