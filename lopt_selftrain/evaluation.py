"""Evaluating members: short fresh inner runs, the same for every member.

The PBT ranking is only as good as its evaluation. Every member trains the *same*
freshly sampled tasks, from the same initial parameters, on the same batches and
keys (common random numbers), so differences come from the optimizers alone.

Meta-loss of a member = mixture-weighted mean over families of
`mean_t loss_t / loss_0` averaged over tasks: the average inner training loss
relative to the (member-independent) initial loss. 1.0 means "no progress"; the
normalisation keeps a quadratic (loss ~20) from drowning MNIST-1D (loss ~2.3).
`EvalConfig.meta_objective` picks what is averaged: every step's training loss
("mean", the default), the last `curves.FINAL_FRACTION` of the steps ("final":
rewards where training ends up, not how fast it starts), or the loss on the
task's outer_valid split ("outer_valid": rewards generalisation). The ranking
should use the objective the estimator meta-trains on
(`EstimatorConfig.meta_objective`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization import training
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.tasks import base as tasks_base

from lopt_selftrain import curves
from lopt_selftrain.tasks import log_loss

META_OBJECTIVES = ("mean", "final", "log_final", "outer_valid")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How members are evaluated for ranking and logging.

  Attributes:
    num_tasks: fresh tasks per family per evaluation.
    num_steps: inner training steps per task.
    meta_objective: one of META_OBJECTIVES (see the module docstring).
  """
  num_tasks: int = 8
  num_steps: int = 100
  meta_objective: str = "mean"

  def __post_init__(self):
    if self.num_tasks < 1 or self.num_steps < 1:
      raise ValueError("EvalConfig.num_tasks and num_steps must be >= 1, got "
                       f"{self.num_tasks}, {self.num_steps}")
    if self.meta_objective not in META_OBJECTIVES:
      raise ValueError(f"EvalConfig.meta_objective must be one of "
                       f"{META_OBJECTIVES}, got {self.meta_objective!r}")


def inner_losses(learned_opt: lopt_base.LearnedOptimizer,
                 task_family: tasks_base.TaskFamily, theta: Any, key: jax.Array,
                 data: Any, num_tasks: int, num_steps: int,
                 meta_data: Any = None) -> jax.Array:
  """Training-loss curves of `num_tasks` fresh tasks trained by opt_fn(theta).

  Args:
    learned_opt: learned optimizer architecture.
    task_family: family the tasks are drawn from.
    theta: weights of one learned optimizer (no population axis).
    key: decides the tasks, their initialisation and per-step keys.
    data: batches with leading axes [num_steps, num_tasks], or () without data.
    num_tasks: number of tasks.
    num_steps: inner steps.
    meta_data: optional batches shaped like `data` (e.g. of outer_valid); when
      given, the curves are the loss on them, at the same params.

  Returns:
    [num_tasks, num_steps] loss before each update.
  """
  opt = learned_opt.opt_fn(theta)

  def one_task(task_key, task_data):
    k_sample, k_init, k_opt, k_steps = jax.random.split(task_key, 4)
    task = task_family.task_fn(task_family.sample(k_sample))
    params, model_state = task.init_with_state(k_init)
    state = opt.init(params, model_state, num_steps=num_steps, key=k_opt)

    def step(state, xs):
      step_key, batch, meta_batch = xs
      k_loss, k_update = jax.random.split(step_key)
      params, model_state = opt.get_params(state), opt.get_state(state)
      (loss, new_model_state), grad = jax.value_and_grad(
          task.loss_with_state, has_aux=True)(params, model_state, k_loss, batch)
      reported = loss
      if meta_data is not None:
        reported, _ = task.loss_with_state(params, model_state, k_loss,
                                           meta_batch)
      state = opt.update(state, grad, loss=loss, model_state=new_model_state,
                         key=k_update)
      return state, reported

    task_data, task_meta = task_data
    _, losses = jax.lax.scan(
        step, state,
        (jax.random.split(k_steps, num_steps), task_data, task_meta))
    return losses

  return jax.vmap(one_task, in_axes=(0, 1))(
      jax.random.split(key, num_tasks), (data, meta_data))


def normalized_meta_loss(losses: jax.Array, fraction: float = 1.0,
                         log: bool = False) -> jax.Array:
  """Mean over tasks of the mean loss over the last `fraction` of the steps /
  initial loss ([..., tasks, steps]); with `log`, of its `log_loss`."""
  initial = jnp.maximum(jnp.abs(losses[..., :1]), 1e-8)
  tail = losses[..., -max(1, math.ceil(fraction * losses.shape[-1])):]
  relative = jnp.mean(tail, axis=-1, keepdims=True) / initial
  return jnp.mean(log_loss.log_loss(relative) if log else relative,
                  axis=(-2, -1))


@functools.partial(jax.jit, static_argnames=("learned_opt", "task_family",
                                             "num_tasks", "num_steps",
                                             "fraction", "log"))
def _population_family_meta_loss(learned_opt, task_family, thetas, key, data,
                                 num_tasks, num_steps, meta_data=None,
                                 fraction=1.0, log=False):
  losses = jax.vmap(lambda theta: inner_losses(
      learned_opt, task_family, theta, key, data, num_tasks, num_steps,
      meta_data))(thetas)
  return normalized_meta_loss(losses, fraction, log)


def eval_batches(task_family: tasks_base.TaskFamily, num_tasks: int,
                 num_steps: int, split: str = "train") -> Any:
  """[num_steps, num_tasks] batches of `split` (or () for data-free families)."""
  if task_family.datasets is None:
    return ()
  return training.get_batches(task_family, (num_steps, num_tasks), split=split)


def evaluate_population(learned_opt: lopt_base.LearnedOptimizer,
                        families: tuple[tasks_base.TaskFamily, ...],
                        weights: np.ndarray, thetas: Any, key: jax.Array,
                        config: EvalConfig) -> tuple[jax.Array, jax.Array]:
  """Meta-loss of every member (leading axis of `thetas`) on shared fresh tasks.

  Returns:
    (meta_loss [N], per_family [F, N]); non-finite where a member diverged.
  """
  per_family = []
  for family, family_key in zip(families, jax.random.split(key, len(families))):
    data = eval_batches(family, config.num_tasks, config.num_steps)
    meta_data = (eval_batches(family, config.num_tasks, config.num_steps,
                              "outer_valid")
                 if config.meta_objective == "outer_valid" else None)
    fraction = (curves.FINAL_FRACTION
                if config.meta_objective in ("final", "log_final") else 1.0)
    per_family.append(_population_family_meta_loss(
        learned_opt, family, thetas, family_key, data, config.num_tasks,
        config.num_steps, meta_data, fraction,
        config.meta_objective == "log_final"))
  per_family = jnp.stack(per_family)
  return jnp.tensordot(jnp.asarray(weights, per_family.dtype), per_family,
                       axes=1), per_family
