"""Meta-training on log loss, through lo's per-task `normalizer` hook.

lo's truncated estimators (PES/ES, lo 0.0.1 and HEAD) pass every inner loss
through `task.normalizer` before averaging it into the meta-loss; the inner
gradient and the loss the learned optimizer is shown are untouched.
`LogMetaLossFamily` sets that hook to a log, so a meta-gradient rewards taking a
loss from 1e-3 to 1e-6 as much as from 1 to 1e-3. A mean-loss objective cannot
tell those apart, and the held-out suite compares final losses by ratio.
The log also makes families of very different loss scales (a quadratic at 20,
a classifier at 2.3) contribute comparable meta-gradients without normalising
by the initial loss.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from learned_optimization.tasks import base as tasks_base

# Losses are floored here before the log: a task that reaches exactly 0 (or a
# negative loss) must not send the meta-loss to -inf.
LOG_FLOOR = 1e-10


def log_loss(loss: jnp.ndarray) -> jnp.ndarray:
  """log(max(loss, LOG_FLOOR)); non-finite losses stay non-finite."""
  return jnp.log(jnp.maximum(loss, LOG_FLOOR))


class _LogNormalizedTask(tasks_base.Task):
  """`task` with `normalizer` = log of the task's own normalizer."""

  def __init__(self, task: tasks_base.Task):
    self.task = task
    self.datasets = task.datasets
    self.init = task.init
    self.init_with_state = task.init_with_state
    self.loss = task.loss
    self.loss_with_state = task.loss_with_state
    self.loss_with_state_and_aux = task.loss_with_state_and_aux

  def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
    return log_loss(self.task.normalizer(loss))

  @property
  def name(self) -> str:
    return self.task.name


class LogMetaLossFamily(tasks_base.TaskFamily):
  """`family` whose tasks report log loss to lo's meta-loss (see module doc).

  Sampling, initialisation, data and inner losses are `family`'s own, so an
  estimator built on the wrapper unrolls exactly the same inner problems.
  """

  def __init__(self, family: tasks_base.TaskFamily):
    self.family = family
    self.datasets = family.datasets
    self._name = family.name

  def sample(self, key: Any) -> Any:
    return self.family.sample(key)

  def task_fn(self, cfg: Any) -> tasks_base.Task:
    return _LogNormalizedTask(self.family.task_fn(cfg))
