"""A population of learned optimizers that trains itself (the paper's method).

Data layout: the population is the leading axis of every array in
`PopulationState`. One meta step is

  thetas[N]  --vmap(lo estimator.compute_gradient_estimate)-->  meta-grads[N]
             --jit(vmap(outer optimizer update))-->             thetas'[N]

where the outer optimizer is `SelfUpdate` (a learned optimizer from the population
computes the step: the member itself, the current best member, or a random one)
or, for the baseline, a hand-designed lo optimizer such as Adam (see
`outer_optimizer`). Every `pbt.interval` steps a PBT round
(`rounds.pbt_round`) evaluates all members on shared fresh tasks and replaces
bad or diverged members.

The task mixture keeps one lo gradient estimator (and persistent unroll state)
per family; each meta step draws one family with the mixture's weights and
advances the whole population on it, so the step stays one vmapped call.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import gin
import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base
from learned_optimization.outer_trainers import truncation_schedule

from lopt_selftrain import (
  compat,
  data_stream,
  evaluation,
  outer_optimizer,
  pbt,
  sharding,
)
from lopt_selftrain.tasks import log_loss

TEACHER_MODES = ("self", "best", "random")
ESTIMATOR_OBJECTIVES = ("train", "log_train", "outer_valid")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
  """lo gradient estimator settings, shared by every family of the mixture.

  Attributes:
    kind: "pes" (TruncatedPES), "es" (TruncatedES) or "full_es" (FullES).
    num_tasks: inner problems per member per estimate.
    trunc_length: inner steps per truncation (one meta step).
    std: antithetic perturbation scale on theta.
    steps_per_jit: inner steps per jitted lo unroll call.
    trunc_sched: length of an inner problem before it is reset.
    random_initial_iteration_offset: spreads initial inner steps to desync.
    meta_objective: what the estimator's meta-loss averages over a truncation:
      "train" (each step's training loss, lo's default), "log_train" (its log,
      `tasks.log_loss`: rewards every factor of loss reduction alike) or
      "outer_valid" (the loss after each step on a batch of the task's
      outer_valid split; lo 0.0.1's `train_and_meta`). Rank with the matching
      `EvalConfig.meta_objective` ("mean" or "final" / "log_final" /
      "outer_valid").
  """
  kind: str = "pes"
  num_tasks: int = 8
  trunc_length: int = 10
  std: float = 0.01
  steps_per_jit: int = 10
  trunc_sched: Any = None
  random_initial_iteration_offset: int = 0
  meta_objective: str = "train"

  def __post_init__(self):
    if self.meta_objective not in ESTIMATOR_OBJECTIVES:
      raise ValueError("EstimatorConfig.meta_objective must be one of "
                       f"{ESTIMATOR_OBJECTIVES}, got {self.meta_objective!r}")

  def build(self, task_family: Any, learned_opt: lopt_base.LearnedOptimizer):
    """The lo estimator for one family, on whichever lo API is installed."""
    sched = self.trunc_sched or truncation_schedule.ConstantTruncationSchedule(100)
    kwargs = dict(std=self.std, steps_per_jit=self.steps_per_jit)
    # lo names the unroll length per estimator: PES trunc_length, ES unroll_length.
    if self.kind == "pes":
      kwargs["trunc_length"] = self.trunc_length
    elif self.kind == "es":
      kwargs["unroll_length"] = self.trunc_length
    if self.meta_objective == "outer_valid":
      kwargs["train_and_meta"] = True
    if self.meta_objective == "log_train":
      task_family = log_loss.LogMetaLossFamily(task_family)
    return compat.make_gradient_estimator(
        self.kind, task_family, learned_opt, sched, self.num_tasks,
        random_initial_iteration_offset=self.random_initial_iteration_offset,
        **kwargs)


@flax.struct.dataclass
class PopulationState:
  """Everything that evolves during meta-training; leading axis = member.

  Attributes:
    outer_opt_state: [N] state of the outer optimizer; holds each theta.
    estimator_states: one [N] lo estimator (unroll) state per task family.
    fault: [N] int8, 0 while a member is healthy, else the first non-finite
      value it met since the last PBT round: an index into FAULTS plus one.
    meta_loss: [N] meta-loss from the latest evaluation (inf before the first).
    key: PRNG key of the run.
    step: meta step count.
  """
  outer_opt_state: Any
  estimator_states: tuple[Any, ...]
  fault: jax.Array
  meta_loss: jax.Array
  key: jax.Array
  step: jax.Array

  @property
  def healthy(self) -> jax.Array:
    """[N] False once a member met a non-finite meta-loss, grad or weight."""
    return self.fault == 0


# What can blow up in a meta step, in the order it is checked (`fault` codes).
FAULTS = ("meta-loss of the gradient estimate", "meta-gradient", "weights")


def strong_types(tree: Any) -> Any:
  """`tree` without weak types. lo's initial states hold weakly typed int32
  leaves (rolling-feature step counts, truncation lengths) that a step returns
  strongly typed: left weak, the jitted step compiles twice."""
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x,
      tree)


def _all_finite(tree: Any) -> jax.Array:
  """[N] True where every leaf of member i is finite."""
  leaves = jax.tree_util.tree_leaves(tree)
  return functools.reduce(jnp.logical_and, [
      jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves])


@gin.configurable
class PopulationTrainer:
  """Meta-trains `population_size` learned optimizers together.

  Args:
    learned_opt: lo learned optimizer (architecture shared by all members).
    task_mixture: `lopt_selftrain.tasks.TaskMixture` of lo task families.
    outer_opt: lo Optimizer for theta. `SelfUpdate()` (default) is the paper's
      self-training; its `learned_opt`, when unset, is `learned_opt` here.
      Any hand-designed lo optimizer (e.g. `Adam`) gives the baseline, with
      members trained independently.
    population_size: number of members, >= 2.
    teacher: who computes member i's self-update: "self" (member i),
      "best" (the best member at the last evaluation), "random" (a random
      member, redrawn every step). Ignored for hand-designed outer optimizers.
    estimator: lo gradient estimator settings.
    pbt_config: population based training settings.
    eval_config: evaluation settings (ranking and logged meta-loss).
    seed: seed of everything random in the run.
    num_meta_steps: length of the run (also lo's `num_steps` for schedules).
  """

  def __init__(self,
               learned_opt: lopt_base.LearnedOptimizer = gin.REQUIRED,
               task_mixture: Any = gin.REQUIRED,
               outer_opt: opt_base.Optimizer | None = None,
               population_size: int = 8,
               teacher: str = "self",
               estimator: EstimatorConfig | None = None,
               pbt_config: pbt.PBTConfig | None = None,
               eval_config: evaluation.EvalConfig | None = None,
               seed: int = 0,
               num_meta_steps: int = 1000):
    if population_size < 2:
      raise ValueError(
          f"PopulationTrainer.population_size must be >= 2, got {population_size}")
    if teacher not in TEACHER_MODES:
      raise ValueError(f"PopulationTrainer.teacher must be one of {TEACHER_MODES},"
                       f" got {teacher!r}")
    if num_meta_steps < 1:
      raise ValueError(
          f"PopulationTrainer.num_meta_steps must be >= 1, got {num_meta_steps}")
    # Wrapped where lo's compiled updates need it (RNNMLPLOpt, see compat).
    learned_opt = compat.jit_safe(learned_opt)
    self.learned_opt = learned_opt
    self.task_mixture = task_mixture
    self.population_size = population_size
    self.teacher = teacher
    self.estimator_config = estimator or EstimatorConfig()
    self.pbt_config = pbt_config or pbt.PBTConfig()
    self.outer = outer_optimizer.make(outer_opt, learned_opt, population_size,
                                      self.pbt_config)
    self.outer_opt = self.outer.opt
    self.eval_config = eval_config or evaluation.EvalConfig()
    self.seed = seed
    self.num_meta_steps = num_meta_steps
    self.estimators = tuple(self.estimator_config.build(f, learned_opt)
                            for f in task_mixture.families)
    data_stream.make_resumable(task_mixture.families)
    self._estimate = tuple(compat.population_gradient_estimate(e)
                           for e in self.estimators)
    self._step_fns: dict[int, Any] = {}
    self._batch_demand: dict[int, dict[str, int]] = {}

  @property
  def outer_optimizer_name(self) -> str:
    """"learned" for self-training, else the hand-designed optimizer's class."""
    return self.outer.name

  # ---- state ---------------------------------------------------------------

  def init(self) -> PopulationState:
    """Randomly initialised population (members differ by their init key)."""
    n = self.population_size
    k_theta, k_est, k_run = jax.random.split(jax.random.PRNGKey(self.seed), 3)
    thetas = jax.vmap(self.learned_opt.init)(jax.random.split(k_theta, n))
    state = PopulationState(
        outer_opt_state=self.outer.init(thetas, self.num_meta_steps),
        estimator_states=(), fault=jnp.zeros(n, jnp.int8),
        meta_loss=jnp.full(n, jnp.inf),
        key=k_run, step=jnp.asarray(0, jnp.int32))
    return self.fresh_unrolls(state, k_est)

  def fresh_unrolls(self, state: PopulationState, key: jax.Array
                    ) -> PopulationState:
    """New inner problems (lo estimator states) for every member and family.

    Unroll states are by far the largest part of the state and carry no
    learned information, so a kept-aside population (PBT's last good one)
    stores only weights and optimizer states and gets fresh unrolls on restore.
    """
    n = self.population_size
    weights = jax.vmap(compat.worker_weights, in_axes=(0, None))(
        self.thetas(state), state.step)
    return strong_types(state.replace(estimator_states=tuple(
        jax.vmap(e.init_worker_state)(weights, jax.random.split(k, n))
        for e, k in zip(self.estimators,
                        jax.random.split(key, len(self.estimators))))))

  @functools.partial(jax.jit, static_argnums=0)
  def thetas(self, state: PopulationState) -> Any:
    """[N] learned-optimizer weights."""
    return jax.vmap(self.outer_opt.get_params)(state.outer_opt_state)

  # ---- middle loop: one meta step -------------------------------------------

  def family_index(self, step: int) -> int:
    """The family meta step `step` trains on: a host-side draw from the
    mixture, seeded by (seed, step), so a resumed run repeats it."""
    return self.task_mixture.sample_index(np.random.default_rng([self.seed, 1, step]))

  def step(self, state: PopulationState, step: int | None = None
           ) -> tuple[PopulationState, jax.Array]:
    """One meta step of every member: a single jitted call.

    Args:
      state: the population.
      step: `state.step`, if the caller counts steps on the host; passing it
        avoids waiting for the device, so steps are dispatched back to back.

    Returns:
      (next state, [N] meta-loss of this step's PES estimate).
    """
    if step is None:
      step = int(sharding.to_host(state.step))
    family = self.family_index(step)
    return self.step_fn(family, state)(state, *self.step_inputs(family))

  def step_fn(self, family: int, state: PopulationState) -> Callable[..., Any]:
    """The jitted step on family `family`: fn(state, *step_inputs(family)).

    Made on first use, when it also measures how many batches lo 0.0.1's
    estimators draw while traced (`data_stream.batch_demand`).
    """
    if family not in self._step_fns:
      fam = self.task_mixture.families[family]
      self._batch_demand[family] = (
          {} if compat.takes_datas(self.estimators[family]) else
          data_stream.batch_demand(fam, lambda: self._step_body(family, state)))
      self._step_fns[family] = jax.jit(functools.partial(self._fed_step, family))
    return self._step_fns[family]

  def step_inputs(self, family: int) -> tuple[dict[str, Any], Any]:
    """One step's data, drawn on the host from the family's (counting) iterators:
    the batches lo 0.0.1's estimators draw while traced, and lo HEAD's
    `get_datas()`; each side is empty on the other lo."""
    fam = self.task_mixture.families[family]
    return (data_stream.draw(fam, self._batch_demand[family]),
            compat.host_datas(self.estimators[family]))

  def _fed_step(self, family: int, state: PopulationState,
                batches: dict[str, Any], datas: Any
                ) -> tuple[PopulationState, jax.Array]:
    """`_step_body` reading lo's batches from its arguments."""
    with data_stream.feeding(self.task_mixture.families[family], batches):
      return self._step_body(family, state, datas)

  def _step_body(self, family: int, state: PopulationState, datas: Any = None
                 ) -> tuple[PopulationState, jax.Array]:
    """vmap(lo estimator) -> vmap(outer update), on one family's estimator."""
    key, k_est, k_teacher = jax.random.split(state.key, 3)
    weights = jax.vmap(compat.worker_weights, in_axes=(0, None))(
        self.thetas(state), state.step)
    out, _ = self._estimate[family](
        weights, jax.random.split(k_est, self.population_size),
        state.estimator_states[family], datas)
    outer_state, fault = self._apply_update(
        state.outer_opt_state, out.grad, out.mean_loss,
        self._teacher_index(state.meta_loss, k_teacher), state.fault)
    est_states = tuple(out.unroll_state if i == family else s
                       for i, s in enumerate(state.estimator_states))
    return state.replace(outer_opt_state=outer_state,
                         estimator_states=est_states, fault=fault, key=key,
                         step=state.step + 1), out.mean_loss

  def _teacher_index(self, meta_loss: jax.Array, key: jax.Array) -> jax.Array:
    """[N] index of the member whose weights compute member i's update."""
    n = self.population_size
    if self.teacher == "random":
      return jax.random.randint(key, (n,), 0, n)
    own = jnp.arange(n)
    if self.teacher == "best":
      return jnp.where(jnp.isfinite(meta_loss).any(),
                       jnp.full(n, jnp.argmin(jnp.nan_to_num(meta_loss,
                                                             nan=jnp.inf))),
                       own)
    return own

  @functools.partial(jax.jit, static_argnums=0)
  def _apply_update(self, outer_state, grads, losses, teacher_index, fault):
    """jit(vmap(outer update)) for the whole population, plus fault codes."""
    new_state = self.outer.update(outer_state, grads, losses, teacher_index)
    weights_ok = [_all_finite(jax.vmap(self.outer_opt.get_params)(s))
                  for s in (outer_state, new_state)]
    new_fault = jnp.select(  # the first non-finite value, in computing order
        [~weights_ok[0], ~jnp.isfinite(losses), ~_all_finite(grads),
         ~weights_ok[1]], [3, 1, 2, 3], 0).astype(fault.dtype)
    return new_state, jnp.where(fault == 0, new_fault, fault)

  # ---- outer loop: evaluation and PBT ---------------------------------------

  def evaluate(self, state: PopulationState) -> tuple[jax.Array, jax.Array]:
    """([N] meta-loss, [F, N] per family) on tasks shared by all members.

    The evaluation tasks (sampled configs, initial parameters, step keys) are
    the same every round too, like a fixed validation set, so meta-loss curves
    compare across steps; only the data batches move on with the stream.
    """
    return self.evaluate_optimizer(self.learned_opt, self.thetas(state))

  def evaluate_optimizer(self, learned_opt: lopt_base.LearnedOptimizer,
                         thetas: Any) -> tuple[jax.Array, jax.Array]:
    """`evaluate` for any learned optimizer with [N] weights `thetas`, e.g. a
    hand-designed one wrapped by lo, as a reference on the same tasks."""
    return evaluation.evaluate_population(
        learned_opt, self.task_mixture.families, self.task_mixture.weights,
        thetas, jax.random.PRNGKey(self.seed + 1), self.eval_config)

  @functools.partial(jax.jit, static_argnums=0)
  def exploit_explore(self, state: PopulationState, source: jax.Array,
                      replaced: jax.Array, meta_loss: jax.Array
                      ) -> PopulationState:
    """Member i becomes a copy of member source[i] (whole state: weights,
    outer optimizer state, unrolls), then the outer optimizer perturbs the
    `replaced` copies. One jitted computation (rather than an eager op per
    leaf) also keeps the order of cross-host collectives identical on every
    process."""
    state = state.replace(
        outer_opt_state=pbt.gather(state.outer_opt_state, source),
        estimator_states=pbt.gather(state.estimator_states, source),
        meta_loss=meta_loss[source], fault=jnp.zeros_like(state.fault))
    if not self.outer.explores:
      return state
    key, k_explore = jax.random.split(state.key)
    return state.replace(
        outer_opt_state=self.outer.explore(state.outer_opt_state, replaced,
                                           k_explore),
        key=key)
