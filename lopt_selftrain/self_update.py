"""The middle loop: a learned optimizer updates learned-optimizer weights.

`SelfUpdate` is an lo `Optimizer` over the weights theta of a learned optimizer.
Its update of theta is computed by that same learned optimizer, instantiated with
the *current* theta (self-training) or with weights handed in (a teacher from the
population). No hand-designed rule computes the step; two knobs size it: a
per-tensor bound on its RMS (`max_step_rms`), because an optimizer that learns
larger inner steps also takes larger steps on itself and that feedback loop can
run away, and a scalar `step_scale` on the bounded step. The scale lives in the
optimizer state so population based training can copy and explore it per member.

Because it is an ordinary lo `Optimizer`, it also drops into lo's own
`GradientLearner(theta_opt=SelfUpdate(...))` for single-optimizer self-training.
"""

from __future__ import annotations

from typing import Any

import flax
import gin
import jax
import jax.numpy as jnp
import optax
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base

from lopt_selftrain import compat


@flax.struct.dataclass
class SelfUpdateState:
  """State of `SelfUpdate`.

  Attributes:
    lopt_state: the learned optimizer's own optimizer state over theta; lo keeps
      the parameters (here: theta) in its `.params`.
    step_scale: multiplier on the learned step (explored by PBT).
  """
  lopt_state: Any
  step_scale: jnp.ndarray

  @property
  def iteration(self) -> jnp.ndarray:
    """Outer iteration, read by lo's `GradientLearner.get_state_for_worker`."""
    return self.lopt_state.iteration

  def with_theta(self, theta: Any) -> SelfUpdateState:
    """Same state holding `theta`."""
    return self.replace(lopt_state=with_params(self.lopt_state, theta))


def with_params(lopt_state: Any, params: Any) -> Any:
  """`lopt_state` holding `params`: lo optimizer states are flax dataclasses or
  namedtuples with a `.params` field."""
  if hasattr(lopt_state, "_replace"):
    return lopt_state._replace(params=params)
  return lopt_state.replace(params=params)


@gin.configurable
class SelfUpdate(opt_base.Optimizer):
  """lo Optimizer whose theta update is computed by a learned optimizer.

  Args:
    learned_opt: the learned optimizer whose weights are being trained; its
      `opt_fn(weights)` computes the update of theta. None lets the population
      trainer fill in its own learned optimizer (same architecture).
    step_scale: initial multiplier on the learned step at the meta level (in
      a population with `PBTConfig.initial_step_scale_spread` > 1, the centre
      of the members' starting scales).
    max_step_rms: if set, each tensor's learned step is shrunk (direction kept)
      to root-mean-square at most this before `step_scale` multiplies it. A
      safety rail for the feedback loop: a learned optimizer that learns larger
      inner steps also takes larger steps on itself, which unbounded can run
      away and diverge. Applying the scale after the bound keeps it meaningful,
      so PBT can still shrink (or grow) the step once the bound is reached.
  """

  def __init__(self, learned_opt: lopt_base.LearnedOptimizer | None = None,
               step_scale: float = 1.0, max_step_rms: float | None = None):
    if not step_scale > 0:
      raise ValueError(f"SelfUpdate.step_scale must be > 0, got {step_scale}")
    if max_step_rms is not None and not max_step_rms > 0:
      raise ValueError(
          f"SelfUpdate.max_step_rms must be > 0 or None, got {max_step_rms}")
    self.learned_opt = compat.jit_safe(learned_opt)
    self.step_scale = step_scale
    self.max_step_rms = max_step_rms

  @property
  def name(self) -> str:
    return "learned"

  def init(self, params: lopt_base.MetaParams, model_state: Any = None,
           num_steps: int | None = None, key: Any = None) -> SelfUpdateState:
    lopt_state = self.learned_opt.opt_fn(params).init(
        params, model_state, num_steps=num_steps, key=key)
    return SelfUpdateState(lopt_state=lopt_state,
                           step_scale=jnp.asarray(self.step_scale, jnp.float32))

  def get_params(self, state: SelfUpdateState) -> lopt_base.MetaParams:
    return state.lopt_state.params

  def get_state(self, state: SelfUpdateState) -> Any:
    return state.lopt_state.state

  def update(self, opt_state: SelfUpdateState, grad: Any, loss: Any = None,
             model_state: Any = None, is_valid: bool = False, key: Any = None,
             teacher_theta: lopt_base.MetaParams | None = None,
             **kwargs: Any) -> SelfUpdateState:
    """One meta-step: theta <- theta + scale * bound(learned step on `grad`).

    Args:
      opt_state: current state; holds theta.
      grad: meta-gradient with the structure of theta.
      loss: meta-loss, a feature for learned optimizers that read it.
      model_state: unused; kept for lo's interface.
      is_valid: unused; kept for lo's interface.
      key: randomness for stochastic learned optimizers.
      teacher_theta: weights of the learned optimizer that computes the step;
        None means the current theta itself (self-training).
      **kwargs: ignored extra lo arguments.

    Returns:
      The next state.
    """
    del model_state, is_valid, kwargs
    theta = self.get_params(opt_state)
    teacher = theta if teacher_theta is None else teacher_theta
    proposal = self.learned_opt.opt_fn(teacher).update(
        opt_state.lopt_state, grad, loss=loss, key=key)
    step = jax.tree_util.tree_map(jnp.subtract, proposal.params, theta)
    if self.max_step_rms is not None:
      step, _ = optax.clip_by_block_rms(self.max_step_rms).update(
          step, optax.EmptyState())
    scale = opt_state.step_scale
    new_theta = jax.tree_util.tree_map(
        lambda old, d: old + scale.astype(old.dtype) * d, theta, step)
    return opt_state.replace(lopt_state=with_params(proposal, new_theta))
