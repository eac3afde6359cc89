"""The one seam between lopt_selftrain and the installed learned_optimization (lo).

Two jobs, both kept here so no other module knows lo, JAX or NumPy versions:

1. `restore_legacy_names` re-adds the JAX/NumPy names that lo 0.0.1 (the only PyPI
   release, 2022) still uses and current JAX/NumPy removed. It only *adds* names that
   are missing; an attribute that exists is never replaced, so on lo HEAD and an
   old JAX it is a no-op. It runs when `lopt_selftrain` is imported, before lo.
2. `make_gradient_estimator` builds lo's TruncatedPES / TruncatedES / FullES for
   either estimator API, detected by capability (does the constructor take a
   `truncated_step`?), never by version string.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def _legacy_names() -> list[tuple[Any, str, Callable[[], Any]]]:
  """(module, name, factory) for each name lo 0.0.1 needs; factories run lazily."""
  import jax.core  # pylint: disable=g-import-not-at-top
  import jax.tree_util as tu  # pylint: disable=g-import-not-at-top

  def shaped_array():
    from jax import core  # pylint: disable=g-import-not-at-top
    if hasattr(core, "ShapedArray"):
      return core.ShapedArray
    # JAX >= 0.8 keeps ShapedArray in jax.extend.core / jax._src.core only.
    from jax._src import core as src_core  # pylint: disable=g-import-not-at-top
    return src_core.ShapedArray

  def xla_client():
    from jax._src.lib import xla_client as xc  # pylint: disable=g-import-not-at-top
    return xc

  return [
      (jax, "tree_multimap", lambda: tu.tree_map),
      (jax, "tree_map", lambda: tu.tree_map),
      (jax, "tree_leaves", lambda: tu.tree_leaves),
      (jax, "tree_flatten", lambda: tu.tree_flatten),
      (jax, "tree_unflatten", lambda: tu.tree_unflatten),
      (jax, "tree_structure", lambda: tu.tree_structure),
      (jax, "ShapedArray", shaped_array),
      (jax.lib, "xla_client", xla_client),
      (np, "product", lambda: np.prod),
  ]


def _has(module: Any, name: str) -> bool:
  """True if `module.name` exists; removed JAX names raise on access, not just miss."""
  try:
    getattr(module, name)
  except AttributeError:
    return False
  return True


def restore_legacy_names() -> list[str]:
  """Adds the missing legacy names lo 0.0.1 needs. Idempotent; never overrides.

  Returns:
    The dotted names that were added by this call (empty when nothing was missing).
  """
  added = []
  for module, name, factory in _legacy_names():
    if not _has(module, name):
      setattr(module, name, factory())
      added.append(f"{module.__name__}.{name}")
  return added


def _estimator_classes() -> dict[str, type]:
  from learned_optimization.outer_trainers import (
    full_es,  # pylint: disable=g-import-not-at-top
    truncated_es,  # pylint: disable=g-import-not-at-top
    truncated_pes,  # pylint: disable=g-import-not-at-top
  )
  return {
      "pes": truncated_pes.TruncatedPES,
      "es": truncated_es.TruncatedES,
      "full_es": full_es.FullES,
  }


ESTIMATOR_KINDS = ("pes", "es", "full_es")


def takes_truncated_step(estimator_cls: type) -> bool:
  """True for lo HEAD's estimators, built from a `truncated_step` object."""
  return "truncated_step" in inspect.signature(estimator_cls.__init__).parameters


def make_gradient_estimator(
    kind: str,
    task_family: Any,
    learned_opt: Any,
    trunc_sched: Any,
    num_tasks: int,
    random_initial_iteration_offset: int = 0,
    **estimator_kwargs: Any,
) -> Any:
  """Builds lo's gradient estimator `kind` on whichever lo API is installed.

  Args:
    kind: "pes" (TruncatedPES), "es" (TruncatedES) or "full_es" (FullES).
    task_family: lo TaskFamily the inner problems are drawn from.
    learned_opt: lo LearnedOptimizer whose weights are meta-trained.
    trunc_sched: lo TruncationSchedule for the inner unroll lengths.
    num_tasks: inner problems unrolled in parallel per estimate.
    random_initial_iteration_offset: desynchronises inner problems at init.
    **estimator_kwargs: the estimator's own settings (trunc_length, std,
      steps_per_jit, ...), passed through unchanged.

  Returns:
    An lo `GradientEstimator` with `init_worker_state` and
    `compute_gradient_estimate`.
  """
  classes = _estimator_classes()
  if kind not in classes:
    raise ValueError(
        f"unknown gradient estimator {kind!r}; expected one of {ESTIMATOR_KINDS}")
  cls = classes[kind]
  if not takes_truncated_step(cls):
    kwargs = dict(estimator_kwargs)
    if "random_initial_iteration_offset" in inspect.signature(
        cls.__init__).parameters:
      kwargs["random_initial_iteration_offset"] = random_initial_iteration_offset
    return cls(task_family=task_family, learned_opt=learned_opt,
               trunc_sched=trunc_sched, num_tasks=num_tasks, **kwargs)

  from learned_optimization.outer_trainers import lopt_truncated_step  # pylint: disable=g-import-not-at-top
  step_params = inspect.signature(
      lopt_truncated_step.VectorizedLOptTruncatedStep.__init__).parameters
  step_kwargs = {k: estimator_kwargs.pop(k) for k in list(estimator_kwargs)
                 if k in step_params}
  truncated_step = lopt_truncated_step.VectorizedLOptTruncatedStep(
      task_family=task_family, learned_opt=learned_opt, trunc_sched=trunc_sched,
      num_tasks=num_tasks,
      random_initial_iteration_offset=random_initial_iteration_offset,
      **step_kwargs)
  return cls(truncated_step=truncated_step, **estimator_kwargs)


def worker_weights(theta: Any, outer_iteration: Any = 0) -> Any:
  """lo `WorkerWeights` for `theta`, filling whichever fields this lo defines."""
  from learned_optimization.outer_trainers import gradient_learner as gl  # pylint: disable=g-import-not-at-top
  fields = {f for f in gl.WorkerWeights.__dataclass_fields__}
  kwargs = {"theta": theta,
            "outer_state": gl.OuterState(jax.numpy.asarray(outer_iteration))}
  if "theta_model_state" in fields:
    kwargs["theta_model_state"] = None
  return gl.WorkerWeights(**kwargs)
