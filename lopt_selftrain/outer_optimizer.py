"""The outer optimizer of a population: what moves every member's weights theta.

Self-training (`SelfUpdate`: a learned optimizer of the population computes the
step) and the baseline (a hand-designed lo optimizer such as Adam) differ in a
few places: the self-update has a per-member step scale that starts on a ladder
and that PBT explores, a teacher whose weights compute the step, and metrics of
its own. Those differences live here, behind one interface, so the population
step and the PBT round never ask which kind they hold.

Every method works on the whole population (leading axis = member).
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base

from lopt_selftrain import pbt, sharding
from lopt_selftrain.self_update import SelfUpdate


class OuterOptimizer(Protocol):
  """A population's outer optimizer (see the module docstring)."""

  opt: opt_base.Optimizer  # the lo optimizer applied to each member
  name: str  # "learned" for self-training, else the optimizer's class
  explores: bool  # whether PBT perturbs the copies it makes

  def init(self, thetas: Any, num_steps: int) -> Any:
    """[N] optimizer states holding [N] weights `thetas`."""

  def update(self, state: Any, grads: Any, losses: jax.Array,
             teacher_index: jax.Array) -> Any:
    """[N] next states; member i's step may be computed by member
    teacher_index[i] (ignored where the optimizer is not learned)."""

  def explore(self, state: Any, replaced: jax.Array, key: jax.Array) -> Any:
    """[N] states with the `replaced` members perturbed (PBT's explore)."""

  def metrics(self, state: Any) -> dict[str, np.ndarray]:
    """Per-member values worth a metrics record, by record key."""

  def describe(self, state: Any) -> str:
    """A few words naming the outer optimizer's scale, for error messages."""


class SelfTraining:
  """`SelfUpdate`: each member's step is computed by a learned optimizer (its
  own weights or a teacher's), times a per-member scale that PBT explores."""

  name = "learned"

  def __init__(self, opt: SelfUpdate, population_size: int,
               pbt_config: pbt.PBTConfig):
    self.opt = opt
    self.pbt_config = pbt_config
    self.explores = pbt_config.enabled
    self.initial_step_scales = (
        pbt_config.initial_step_scales(opt.step_scale, population_size)
        if pbt_config.enabled else
        np.full(population_size, opt.step_scale, np.float32))
    low, high = pbt_config.step_scale_range
    first, last = self.initial_step_scales[[0, -1]]
    if not low <= first <= last <= high:
      # PBT would clip the first copies into the range: a jump, not a search.
      raise ValueError(
          f"SelfUpdate.step_scale = {opt.step_scale} starts members at "
          f"scales {first:.3g}..{last:.3g} (PBTConfig.initial_step_scale_spread"
          f" = {pbt_config.initial_step_scale_spread}), outside "
          f"PBTConfig.step_scale_range = {pbt_config.step_scale_range}")

  def init(self, thetas: Any, num_steps: int) -> Any:
    state = jax.vmap(lambda t: self.opt.init(t, num_steps=num_steps))(thetas)
    return state.replace(step_scale=jnp.asarray(self.initial_step_scales))

  def update(self, state: Any, grads: Any, losses: jax.Array,
             teacher_index: jax.Array) -> Any:
    teachers = pbt.gather(jax.vmap(self.opt.get_params)(state), teacher_index)
    return jax.vmap(lambda s, g, loss, t: self.opt.update(
        s, g, loss=loss, teacher_theta=t))(state, grads, losses, teachers)

  def explore(self, state: Any, replaced: jax.Array, key: jax.Array) -> Any:
    config = self.pbt_config
    step_scale, thetas = pbt.explore(
        state.step_scale, jax.vmap(self.opt.get_params)(state), replaced, key,
        config.explore_factors, config.weight_noise_std,
        config.step_scale_range)
    return state.with_theta(thetas).replace(step_scale=step_scale)

  def metrics(self, state: Any) -> dict[str, np.ndarray]:
    return {"member_step_scale": sharding.to_host(state.step_scale)}

  def describe(self, state: Any) -> str:
    scale = sharding.to_host(state.step_scale)
    return f"self-update scales {scale.min():.3g}..{scale.max():.3g}"


class HandDesigned:
  """A hand-designed lo optimizer (the baseline): members train independently
  and PBT copies them without perturbing anything."""

  explores = False

  def __init__(self, opt: opt_base.Optimizer):
    self.opt = opt
    self.name = type(opt).__name__

  def init(self, thetas: Any, num_steps: int) -> Any:
    return jax.vmap(lambda t: self.opt.init(t, num_steps=num_steps))(thetas)

  def update(self, state: Any, grads: Any, losses: jax.Array,
             teacher_index: jax.Array) -> Any:
    del teacher_index
    return jax.vmap(lambda s, g, loss: self.opt.update(s, g, loss=loss))(
        state, grads, losses)

  def explore(self, state: Any, replaced: jax.Array, key: jax.Array) -> Any:
    del replaced, key
    return state

  def metrics(self, state: Any) -> dict[str, np.ndarray]:
    return {}

  def describe(self, state: Any) -> str:
    return f"outer optimizer {self.name}"


def make(opt: opt_base.Optimizer | None,
         learned_opt: lopt_base.LearnedOptimizer, population_size: int,
         pbt_config: pbt.PBTConfig) -> OuterOptimizer:
  """The outer optimizer for `opt`; None or a `SelfUpdate` without its own
  learned optimizer self-trains `learned_opt`."""
  if opt is None:
    opt = SelfUpdate(learned_opt)
  if not isinstance(opt, SelfUpdate):
    return HandDesigned(opt)
  if opt.learned_opt is None:
    opt = SelfUpdate(learned_opt, opt.step_scale, opt.max_step_rms)
  return SelfTraining(opt, population_size, pbt_config)
