"""The one seam between lopt_selftrain and the installed learned_optimization (lo).

Two jobs, both kept here so no other module knows lo, JAX or NumPy versions:

1. `restore_legacy_names` re-adds the JAX/NumPy names that lo 0.0.1 (the only PyPI
   release, 2022) still uses and current JAX/NumPy removed. It only *adds* names that
   are missing; an attribute that exists is never replaced, so on lo HEAD and an
   old JAX it is a no-op. It runs when `lopt_selftrain` is imported, before lo.
2. `make_gradient_estimator` builds lo's TruncatedPES / TruncatedES / FullES for
   either estimator API, detected by capability (does the constructor take a
   `truncated_step`?), never by version string.
3. `jit_safe` guards lo learned optimizers whose arithmetic current XLA
   compiles differently from how it runs eagerly (see `_LossFeatureSafeOpt`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
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

# lo modules that declare gin configurables but exist only in some lo versions
# (HEAD's truncated-step estimator API, its nominal Adafactor optimizer).
OPTIONAL_LO_MODULES = (
    "learned_optimization.learned_optimizers.adafac_nominal",
    "learned_optimization.outer_trainers.lopt_truncated_step",
)


def import_optional_lo_modules() -> list[str]:
  """Imports each of `OPTIONAL_LO_MODULES` this lo has; returns their names.

  gin refuses configurables declared after a config is parsed (it locks), so
  the apps import these before parsing, not when the trainer first needs them.
  """
  found = []
  for name in OPTIONAL_LO_MODULES:
    try:
      spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # the parent package is missing too
      spec = None
    if spec is not None:
      importlib.import_module(name)
      found.append(name)
  return found


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
      steps_per_jit, ...), passed through unchanged, except that full_es
      unrolls its schedule's whole length in one jitted chunk.

  Raises:
    ValueError: unknown kind, or full_es on lo HEAD (see below).

  Returns:
    An lo `GradientEstimator` with `init_worker_state` and
    `compute_gradient_estimate`.
  """
  classes = _estimator_classes()
  learned_opt = jit_safe(learned_opt)
  if kind not in classes:
    raise ValueError(
        f"unknown gradient estimator {kind!r}; expected one of {ESTIMATOR_KINDS}")
  cls = classes[kind]
  params = inspect.signature(cls.__init__).parameters
  kwargs = dict(estimator_kwargs)
  if kind == "full_es":
    if takes_truncated_step(cls):
      raise ValueError(
          "EstimatorConfig.kind = 'full_es' runs on lo 0.0.1 only: this lo's "
          "FullES (GitHub HEAD) reduces its metrics with NumPy on the host, "
          "which cannot run inside the population's jitted step; use 'es' with "
          "trunc_length = the schedule's length")
    # lo 0.0.1's FullES unrolls whole inner problems (no trunc_sched) in
    # host-side chunks of steps_per_jit; the population step is compiled whole
    # anyway, so one chunk.
    length = schedule_length(trunc_sched)
    kwargs.update(unroll_length=length, steps_per_jit=length)
  if not takes_truncated_step(cls):
    if "random_initial_iteration_offset" in params:
      kwargs["random_initial_iteration_offset"] = random_initial_iteration_offset
    if "trunc_sched" in params:
      kwargs["trunc_sched"] = trunc_sched
    return cls(task_family=task_family, learned_opt=learned_opt,
               num_tasks=num_tasks, **kwargs)

  from learned_optimization.outer_trainers import lopt_truncated_step  # pylint: disable=g-import-not-at-top
  step_params = inspect.signature(
      lopt_truncated_step.VectorizedLOptTruncatedStep.__init__).parameters
  if "train_and_meta" in kwargs and "train_and_meta" not in params:
    # lo 0.0.1's meta-loss on outer_valid batches is HEAD's meta_loss_split.
    if kwargs.pop("train_and_meta"):
      kwargs["meta_loss_split"] = "outer_valid"
  step_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in step_params}
  truncated_step = lopt_truncated_step.VectorizedLOptTruncatedStep(
      task_family=task_family, learned_opt=learned_opt, trunc_sched=trunc_sched,
      num_tasks=num_tasks,
      random_initial_iteration_offset=random_initial_iteration_offset,
      **step_kwargs)
  return cls(truncated_step=truncated_step, **kwargs)


def population_gradient_estimate(estimator: Any) -> Callable[..., Any]:
  """`estimator.compute_gradient_estimate` vmapped over members, for use in jit.

  Returns fn(weights, keys, states, datas): every member gets the same batches.
  `datas` is `host_datas(estimator)`: None for lo 0.0.1's estimators, which
  draw their batches from the task family's iterators while traced (fed by
  `data_stream.feeding`); lo HEAD's truncated ones refuse to and take them as
  `datas_list`.
  """
  estimate = functools.partial(estimator.compute_gradient_estimate,
                               with_summary=False)
  if not takes_datas(estimator):
    return lambda weights, keys, states, datas: jax.vmap(estimate)(
        weights, keys, states)
  return lambda weights, keys, states, datas: jax.vmap(
      lambda w, k, s: estimate(w, k, s, datas_list=datas))(weights, keys, states)


def takes_datas(estimator: Any) -> bool:
  """Whether the estimator takes its batches as an argument (lo HEAD)."""
  return hasattr(estimator, "get_datas")


def host_datas(estimator: Any) -> Any:
  """lo HEAD: one estimate's batches, `estimator.get_datas()`, drawn here on the
  host (HEAD stacks them with numpy, so not under jit). lo 0.0.1: None."""
  return estimator.get_datas() if takes_datas(estimator) else None


def schedule_length(trunc_sched: Any) -> int:
  """Inner-problem length of a fixed-length lo truncation schedule (FullES's)."""
  length = getattr(trunc_sched.init(jax.random.PRNGKey(0), None), "length", None)
  if not isinstance(length, (int, np.integer)):
    raise ValueError(
        "full_es unrolls whole inner problems of one length; "
        f"{type(trunc_sched).__name__} has none (use ConstantTruncationSchedule)")
  return int(length)


def worker_weights(theta: Any, outer_iteration: Any = 0) -> Any:
  """lo `WorkerWeights` for `theta`, filling whichever fields this lo defines."""
  from learned_optimization.outer_trainers import gradient_learner as gl  # pylint: disable=g-import-not-at-top
  fields = {f for f in gl.WorkerWeights.__dataclass_fields__}
  kwargs = {"theta": theta,
            "outer_state": gl.OuterState(jax.numpy.asarray(outer_iteration))}
  if "theta_model_state" in fields:
    kwargs["theta_model_state"] = None
  return gl.WorkerWeights(**kwargs)



def _reset_unfed_loss_average(state: Any) -> Any:
  """RNNMLPLOpt's initial state with its validation-loss counter at 1.

  lo's RNN-MLP family (`rnn_mlp_lopt._LossNormalizer`) bias-corrects its
  validation-loss average by `1 / (1 - decay**updates + 1e-8)`. Eagerly, at
  `updates == 0` that is 1e8 times a zero mean, i.e. 0. XLA (jaxlib 0.10 here)
  reassociates `(1 - x) + 1e-8` into `(1 + 1e-8) - x`, which is 0 in float32,
  so every compiled update divides by zero and is NaN from its first step.
  Nothing in lo's training loops feeds a validation loss (`is_valid`), so the
  average stays at its zero start; a counter of 1 gives the same feature (0)
  compiled or not.
  """
  accum = state.valid_loss_accum
  return state.replace(valid_loss_accum=accum.replace(
      updates=jnp.maximum(accum.updates, 1)))


@functools.cache
def _jit_safe_classes() -> tuple[type, type]:
  """(Optimizer, LearnedOptimizer) wrapper classes; built on first use because
  lo may only be imported after `restore_legacy_names`."""
  from learned_optimization.learned_optimizers import base as lopt_base  # pylint: disable=g-import-not-at-top
  from learned_optimization.optimizers import base as opt_base  # pylint: disable=g-import-not-at-top

  class SafeOpt(opt_base.Optimizer):
    """The wrapped lo Optimizer with `_reset_unfed_loss_average` at init."""

    def __init__(self, opt: Any):
      super().__init__()
      self.opt = opt

    def init(self, params, model_state=None, num_steps=None, key=None,
             **kwargs):
      return _reset_unfed_loss_average(self.opt.init(
          params, model_state, num_steps=num_steps, key=key, **kwargs))

    def update(self, *args, **kwargs):
      return self.opt.update(*args, **kwargs)

    def get_params(self, state):
      return self.opt.get_params(state)

    def get_state(self, state):
      return self.opt.get_state(state)

    @property
    def name(self):
      return self.opt.name

  class SafeLearnedOpt(lopt_base.LearnedOptimizer):
    """A learned optimizer whose `opt_fn` returns `SafeOpt`s. Compares and
    hashes like the one it wraps, so jit caches keyed on it keep hitting."""

    def __init__(self, learned_opt: Any):
      self.wrapped = learned_opt

    def init(self, key):
      return self.wrapped.init(key)

    def opt_fn(self, theta, is_training=False):
      return SafeOpt(self.wrapped.opt_fn(theta, is_training=is_training))

    @property
    def name(self):
      return self.wrapped.name

    def __getattr__(self, name):  # architecture settings (step_mult, ...)
      if name == "wrapped":  # not set yet (copy, unpickling)
        raise AttributeError(name)
      return getattr(self.wrapped, name)

    def __eq__(self, other):
      return unwrapped(other) is self.wrapped

    def __hash__(self):
      return hash(self.wrapped)

  return SafeOpt, SafeLearnedOpt


def _has_unfed_loss_average(learned_opt: Any) -> bool:
  """True if the optimizer's state has lo's RNN-MLP validation-loss average."""
  def init_state():
    theta = learned_opt.init(jax.random.PRNGKey(0))
    return learned_opt.opt_fn(theta).init({"w": jnp.zeros(2)}, num_steps=1,
                                          key=jax.random.PRNGKey(0))
  return hasattr(jax.eval_shape(init_state), "valid_loss_accum")


def unwrapped(learned_opt: Any) -> Any:
  """The lo learned optimizer inside a `jit_safe` wrapper (or itself)."""
  return (learned_opt.wrapped
          if isinstance(learned_opt, _jit_safe_classes()[1]) else learned_opt)


def jit_safe(learned_opt: Any) -> Any:
  """`learned_opt`, wrapped where its compiled updates would go non-finite.

  Only lo's RNN-MLP family needs it (`_reset_unfed_loss_average`), detected by
  capability (a field of its optimizer state), not by class name; any other
  optimizer, None, or an already wrapped one is returned as is.
  """
  if (learned_opt is None or isinstance(learned_opt, _jit_safe_classes()[1])
      or not _has_unfed_loss_average(learned_opt)):
    return learned_opt
  return _jit_safe_classes()[1](learned_opt)
