"""Throughput: the vmapped population step vs. sequential lo learners, and the
population step time on however many devices JAX sees.

The claim being measured is that keeping the population as a leading array axis
is much faster than running members one after another with lo's own
`SingleMachineGradientLearner`. Both sides use the same learned optimizer, task
family, lo gradient estimator settings and a hand-designed Adam outer update,
so the only difference is vmapped-population vs. a Python loop over learners.

  python -m lopt_selftrain.apps.benchmark --gin_config=gin_configs/selftrain_cpu_demo.gin
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m \
      lopt_selftrain.apps.benchmark --gin_config=... --mode=devices
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax  # noqa: I001
import numpy as np
from learned_optimization.optimizers import base as opt_base
from learned_optimization.outer_trainers import gradient_learner

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import pbt, population, sharding
from lopt_selftrain.population import PopulationState, PopulationTrainer
from lopt_selftrain.tasks import TaskMixture


def machine() -> str:
  """What the timings ran on, e.g. '16 CPU cores, 1 x NVIDIA H200'."""
  return (f"{os.cpu_count()} CPU cores, {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}")


def _timed(fn, state, steps: int) -> tuple[Any, float]:
  """Runs `state = fn(state)` `steps` times; returns (state, seconds)."""
  start = time.perf_counter()
  for _ in range(steps):
    state = fn(state)
  jax.block_until_ready(jax.tree_util.tree_leaves(state))
  return state, time.perf_counter() - start


def _block(state: Any) -> Any:
  return jax.block_until_ready(jax.tree_util.tree_leaves(state))


def timed_steps(step: Callable[[Any, int], Any], state: Any, steps: int,
                max_seconds: float = float("inf")) -> tuple[Any, dict[str, Any]]:
  """Calls `state = step(state, i)`: twice untimed (the first call compiles),
  then timed until `steps` calls or `max_seconds` (at least 2 timed calls).

  Each call is waited for, so the host clock measures device work.
  """
  start = time.perf_counter()
  state = step(state, 0)
  _block(state)
  first = time.perf_counter() - start
  state = step(state, 1)
  _block(state)
  times: list[float] = []
  while len(times) < steps and (len(times) < 2 or sum(times) < max_seconds):
    start = time.perf_counter()
    state = step(state, len(times) + 2)
    _block(state)
    times.append(time.perf_counter() - start)
  return state, {"first_call_s": first, "timed_steps": len(times),
                 "seconds_per_step": float(np.median(times)),
                 "mean_seconds_per_step": float(np.mean(times))}


def one_family(trainer: PopulationTrainer, family_index: int = 0,
               population_size: int | None = None,
               outer_opt: opt_base.Optimizer | None = None,
               steps_per_jit: int | None = None) -> PopulationTrainer:
  """`trainer` restricted to one family of its mixture (every step trains it),
  optionally with another population size, outer optimizer (then without PBT)
  or lo unroll chunk length."""
  estimator = trainer.estimator_config
  if steps_per_jit is not None:
    estimator = dataclasses.replace(estimator, steps_per_jit=steps_per_jit)
  return PopulationTrainer(
      learned_opt=trainer.learned_opt,
      task_mixture=TaskMixture(
          [trainer.task_mixture.families[family_index]], weights=[1.0],
          names=[trainer.task_mixture.names[family_index]]),
      outer_opt=outer_opt or trainer.outer_opt,
      population_size=population_size or trainer.population_size,
      estimator=estimator,
      pbt_config=(pbt.PBTConfig(enabled=False) if outer_opt else
                  trainer.pbt_config),
      seed=trainer.seed)


def lo_learner(trainer: PopulationTrainer, family_index: int, num_tasks: int,
               adam_lr: float = 1e-3
               ) -> gradient_learner.SingleMachineGradientLearner:
  """lo's own single learner with the trainer's learned optimizer and
  estimator settings, `num_tasks` inner problems, and an Adam outer update."""
  estimator = dataclasses.replace(trainer.estimator_config, num_tasks=num_tasks)
  return gradient_learner.SingleMachineGradientLearner(
      trainer.learned_opt,
      [estimator.build(trainer.task_mixture.families[family_index],
                       trainer.learned_opt)],
      opt_base.Adam(adam_lr))


def time_lo_learners(learner: gradient_learner.SingleMachineGradientLearner,
                     count: int, seed: int, steps: int,
                     max_seconds: float = float("inf")) -> dict[str, Any]:
  """One meta step of `count` independent lo learners run one after another
  (one learner object: they share its compiled functions, not their state)."""
  keys = [jax.random.PRNGKey(seed * 1000 + i) for i in range(count)]

  def step(states, i):
    return [learner.update(s, jax.random.fold_in(k, i))[0]
            for s, k in zip(states, keys)]

  states = [population.strong_types(learner.init(k)) for k in keys]
  return timed_steps(step, states, steps, max_seconds)[1]


def time_population(trainer: PopulationTrainer, steps: int,
                    max_seconds: float = float("inf")
                    ) -> tuple[PopulationState, dict[str, Any]]:
  """Step timing of a population; (final state, timing)."""
  return timed_steps(lambda s, i: trainer.step(s, i)[0], trainer.init(), steps,
                     max_seconds)


def population_vs_sequential(trainer: PopulationTrainer, family_index: int = 0,
                             steps: int = 20, adam_lr: float = 1e-3
                             ) -> dict[str, Any]:
  """Member-steps per second of the vmapped population and of lo learners.

  Both sides use the trainer's learned optimizer, estimator settings and
  population size N, on one family of its mixture, with an Adam outer update;
  the sequential side runs N lo learners one after another.

  Returns:
    Dict with population size, seconds per step of each side and the ratio of
    member-steps/s (population / sequential).
  """
  n = trainer.population_size
  pop = one_family(trainer, family_index, outer_opt=opt_base.Adam(adam_lr))
  pop_seconds = time_population(pop, steps)[1]["mean_seconds_per_step"]
  seq_seconds = time_lo_learners(
      lo_learner(trainer, family_index, trainer.estimator_config.num_tasks,
                 adam_lr), n, trainer.seed, steps)["mean_seconds_per_step"]
  return {
      "population_size": n,
      "family": trainer.task_mixture.names[family_index],
      "population_seconds_per_step": pop_seconds,
      "sequential_seconds_per_step": seq_seconds,
      "speedup": seq_seconds / pop_seconds,
  }


def mixture_throughput(trainer: PopulationTrainer, steps: int = 20
                       ) -> dict[str, Any]:
  """`population_vs_sequential` on every family of the trainer's mixture, and
  the mixture-weighted seconds per meta step of both sides (a meta step
  trains one family, drawn with the mixture weights)."""
  families = [dict(population_vs_sequential(trainer, i, steps), weight=float(w))
              for i, w in enumerate(trainer.task_mixture.weights)]
  pop, seq = (sum(f["weight"] * f[k] for f in families)
              for k in ("population_seconds_per_step",
                        "sequential_seconds_per_step"))
  return {"population_size": trainer.population_size, "families": families,
          "mixture": {"population_seconds_per_step": pop,
                      "sequential_seconds_per_step": seq,
                      "speedup": seq / pop}}


def markdown(result: dict[str, Any]) -> str:
  """`mixture_throughput`'s result as a table, one row per family + mixture."""
  n = result["population_size"]
  rows = [(f"{f['family']} ({f['weight']:.2g})", f)
          for f in result["families"]] + [("mixture", result["mixture"])]
  return "\n".join(
      [f"| family (weight) | population of {n}, s/step | {n} sequential lo "
       "learners, s/step | speedup |", "|---|---|---|---|"]
      + [f"| {name} | {r['population_seconds_per_step']:.4f} | "
         f"{r['sequential_seconds_per_step']:.4f} | {r['speedup']:.2f}x |"
         for name, r in rows])


def population_step_seconds(trainer: PopulationTrainer, steps: int = 20,
                            warmup: int = 3) -> float:
  """Seconds per population step, population sharded over all devices."""
  step = lambda s: trainer.step(s)[0]  # noqa: E731
  state, _ = _timed(step, sharding.shard_population(trainer.init()), warmup)
  return _timed(step, state, steps)[1] / steps
