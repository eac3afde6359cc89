"""How the population step scales on one device, against lo's own learners
and the device's limits.

For each population size P (until the device's memory runs out or the
deadline comes) on one family of the config's mixture, population rows first:
  population     one vmapped, jitted step of P members (the config's outer
                 update: self-update for self-training);
  fused_lo       ONE lo `SingleMachineGradientLearner` with P x num_tasks inner
                 problems: the same inner work in lo's own batched form;
  sequential_lo  (first P only) P lo learners of num_tasks problems, one after
                 another.
The population rows also carry XLA's compiled cost of the step (corrected for
loops, see `step_cost`), the achieved FLOP/s and bytes/s against the device's
peaks (`roofline.judge`) and the device's peak memory.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import jax

from lopt_selftrain import benchmark, roofline
from lopt_selftrain.budget import Deadline
from lopt_selftrain.population import PopulationState, PopulationTrainer


def compiled_step(trainer: PopulationTrainer, state: PopulationState) -> Any:
  """The compiled program that `trainer.step` runs for family 0, after it ran
  once (jax's in-memory cache returns it without compiling again)."""
  return trainer.step_fn(0, state).lower(state, *trainer.step_inputs(0)).compile()


def step_cost(trainer: PopulationTrainer, state: PopulationState,
              loops_counted_once: bool) -> dict[str, Any]:
  """FLOPs and bytes of one step of a one-family trainer that has stepped.

  Where XLA counts a scan body once, a step with k = trunc_length /
  steps_per_jit lo unroll scans reports r_k = rest + k * (one inner step). A
  second compile with shorter scans (k' > k) gives the inner step's cost
  (r_k' - r_k) / (k' - k), and the step's is r_k + (trunc_length - k) times
  that. (Work done once per scan, not per step, is counted per step: a small
  overestimate.)
  """
  reported = roofline.cost(compiled_step(trainer, state))
  cfg = trainer.estimator_config
  length, chunk = cfg.trunc_length, cfg.steps_per_jit
  if not loops_counted_once or chunk == 1:
    return dict(reported, reported=reported, corrected=False)
  shorter = max(d for d in range(1, chunk) if length % d == 0)
  variant = benchmark.one_family(trainer, 0, steps_per_jit=shorter)
  variant_state = variant.step(variant.init(), 0)[0]
  other = roofline.cost(compiled_step(variant, variant_state))
  k, k_other = length // chunk, length // shorter
  corrected = {key: reported[key] + (length - k) * (other[key] - reported[key])
               / (k_other - k) for key in reported}
  return dict(corrected, reported=reported, corrected=True,
              variant_steps_per_jit=shorter)


def is_out_of_memory(error: BaseException) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


class _Scaling:
  """The measurements of `population_scaling`, one row at a time."""

  def __init__(self, trainer: PopulationTrainer, family_index: int, steps: int,
               max_seconds: float):
    self.trainer, self.family_index = trainer, family_index
    self.steps, self.max_seconds = steps, max_seconds
    self.peaks = roofline.device_peaks(jax.devices()[0].device_kind)
    self.loops_counted_once = roofline.loop_bodies_counted_once()
    self.correction: dict[str, float] | None = None

  def population(self, size: int) -> dict[str, Any]:
    trainer = benchmark.one_family(self.trainer, self.family_index, size)
    state, row = benchmark.time_population(trainer, self.steps, self.max_seconds)
    reported = roofline.cost(compiled_step(trainer, state))
    if self.correction is None:  # FLOPs and bytes scale with P: correct once
      full = step_cost(trainer, state, self.loops_counted_once)
      self.correction = {k: full[k] / reported[k] if reported[k] else 1.0
                         for k in ("flops", "bytes")}
    flops, bytes_ = (reported[k] * self.correction[k] for k in ("flops", "bytes"))
    row["cost"] = {"flops": flops, "bytes": bytes_, "reported": reported,
                   "loop_correction": self.correction}
    row["roofline"] = roofline.judge(flops, bytes_, row["seconds_per_step"],
                                     self.peaks)
    return row

  def fused_lo(self, size: int) -> dict[str, Any]:
    tasks = self.trainer.estimator_config.num_tasks
    learner = benchmark.lo_learner(self.trainer, self.family_index, size * tasks)
    return benchmark.time_lo_learners(learner, 1, self.trainer.seed, self.steps,
                                      self.max_seconds)

  def sequential_lo(self, size: int) -> dict[str, Any]:
    learner = benchmark.lo_learner(self.trainer, self.family_index,
                                   self.trainer.estimator_config.num_tasks)
    return benchmark.time_lo_learners(learner, size, self.trainer.seed,
                                      self.steps, self.max_seconds)


def _predicted_seconds(last: dict[str, Any] | None, size: int, steps: int,
                       max_seconds: float) -> float | None:
  """A measurement's time from the same side's last one (linear in P)."""
  if last is None or "seconds_per_step" not in last:
    return None
  per_step = last["seconds_per_step"] * size / last["population_size"]
  timed = min(steps * per_step, max(2 * per_step, max_seconds))
  return last["first_call_s"] + per_step + timed


def population_scaling(trainer: PopulationTrainer, populations: Sequence[int],
                       deadline: Deadline, report: Callable[[dict], None],
                       family_index: int = 0, steps: int = 10,
                       max_seconds: float = 20.0,
                       ceilings: tuple[int, int] | None = None
                       ) -> dict[str, Any]:
  """Measures every (population size, side) that fits before `deadline`.

  Args:
    trainer: supplies learned optimizer, outer update, estimator and family.
    populations: sizes, ascending; the first also gets `sequential_lo`.
    deadline: a measurement predicted to overrun it is skipped.
    report: called with the (growing) result after every row.
    family_index: the mixture's family to train.
    steps, max_seconds: timed steps per measurement, at most about this long.
    ceilings: (copy bytes, matmul n) for `roofline.measure_ceilings`, or None.

  Returns:
    {"family", "device_kind", "peaks", "loop_bodies_counted_once",
     "ceilings", "rows": [{"population_size", "side", "status", ...}]}.
  """
  scaling = _Scaling(trainer, family_index, steps, max_seconds)
  result: dict[str, Any] = {
      "family": trainer.task_mixture.names[family_index],
      "num_tasks": trainer.estimator_config.num_tasks,
      "device_kind": jax.devices()[0].device_kind, "peaks": scaling.peaks,
      "loop_bodies_counted_once": scaling.loops_counted_once, "rows": []}
  if ceilings:
    result["ceilings"] = roofline.measure_ceilings(*ceilings)
  report(result)
  last: dict[str, dict[str, Any]] = {}
  failed: set[str] = set()
  # The population at every size first (the scaling and roofline targets),
  # then lo's learners.
  plan = ([(p, "population") for p in populations]
          + [(populations[0], "fused_lo"), (populations[0], "sequential_lo")]
          + [(p, "fused_lo") for p in populations[1:]])
  for size, side in plan:
    row: dict[str, Any] = {"population_size": size, "side": side,
                           "status": "running"}
    result["rows"].append(row)
    if side in failed:
      row["status"] = "skipped: out of memory at a smaller size"
    elif not deadline.allows(_predicted_seconds(last.get(side), size, steps,
                                                max_seconds)):
      row["status"] = "skipped: budget"
    else:
      report(result)  # a kill now leaves this row marked running
      try:
        row.update(getattr(scaling, side)(size), status="ok")
        last[side] = row
      except Exception as e:  # noqa: BLE001  -- recorded, the run goes on
        if is_out_of_memory(e):
          failed.add(side)
        row.update(status="out of memory" if is_out_of_memory(e) else "error",
                   error=_first_line(e))
      gc.collect()
      row["memory"] = roofline.memory_stats()
    report(result)
  return result
