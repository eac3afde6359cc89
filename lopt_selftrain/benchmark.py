"""Throughput: the vmapped population step vs. sequential lo learners, and the
population step time on however many devices JAX sees.

The claim being measured is that keeping the population as a leading array axis
is much faster than running members one after another with lo's own
`SingleMachineGradientLearner`. Both sides use the same learned optimizer, task
family, lo gradient estimator settings and a hand-designed Adam outer update,
so the only difference is vmapped-population vs. a Python loop over learners.

  python -m lopt_selftrain.benchmark --gin_config=gin_configs/selftrain_cpu_demo.gin
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m \
      lopt_selftrain.benchmark --gin_config=... --mode=devices
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import jax  # noqa: I001
from absl import app, flags
from learned_optimization.optimizers import base as opt_base
from learned_optimization.outer_trainers import gradient_learner

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import config, pbt, sharding
from lopt_selftrain.population import PopulationTrainer
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


def population_vs_sequential(trainer: PopulationTrainer, family_index: int = 0,
                             steps: int = 20, warmup: int = 3,
                             adam_lr: float = 1e-3) -> dict[str, float]:
  """Member-steps per second of the vmapped population and of lo learners.

  Args:
    trainer: supplies the learned optimizer, task family and estimator config;
      its population size N is used for both sides.
    family_index: which family of the trainer's mixture to train on.
    steps: timed outer steps (per learner on the sequential side).
    warmup: untimed steps first (compilation).
    adam_lr: outer Adam learning rate used by both sides.

  Returns:
    Dict with population size, seconds per step of each side and the ratio of
    member-steps/s (population / sequential).
  """
  family = trainer.task_mixture.families[family_index]
  n = trainer.population_size
  pop = PopulationTrainer(
      learned_opt=trainer.learned_opt,
      task_mixture=TaskMixture([family], weights=[1.0],
                               names=[trainer.task_mixture.names[family_index]]),
      outer_opt=opt_base.Adam(adam_lr), population_size=n,
      estimator=trainer.estimator_config,
      pbt_config=pbt.PBTConfig(enabled=False), seed=trainer.seed)
  state, _ = _timed(lambda s: pop.step(s)[0], pop.init(), warmup)
  _, pop_seconds = _timed(lambda s: pop.step(s)[0], state, steps)

  learners = []
  for i in range(n):
    learner = gradient_learner.SingleMachineGradientLearner(
        trainer.learned_opt, [trainer.estimator_config.build(
            family, trainer.learned_opt)], opt_base.Adam(adam_lr))
    key = jax.random.PRNGKey(trainer.seed * 1000 + i)
    learners.append((learner, learner.init(key), key))
  seq_seconds = 0.0
  for learner, learner_state, key in learners:
    def update(s, learner=learner, key=key):
      return learner.update(s, key)[0]
    learner_state, _ = _timed(update, learner_state, warmup)
    _, seconds = _timed(update, learner_state, steps)
    seq_seconds += seconds
  return {
      "population_size": n,
      "family": trainer.task_mixture.names[family_index],
      "population_seconds_per_step": pop_seconds / steps,
      "sequential_seconds_per_step": seq_seconds / steps,
      "speedup": seq_seconds / pop_seconds,
  }


def mixture_throughput(trainer: PopulationTrainer, steps: int = 20
                       ) -> dict[str, Any]:
  """`population_vs_sequential` on every family of the trainer's mixture, and
  the mixture-weighted seconds per outer step of both sides (an outer step
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


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    trainer = PopulationTrainer()
  if FLAGS.mode == "devices":
    seconds = population_step_seconds(trainer, FLAGS.steps)
    print(f"| {jax.device_count()} | {trainer.population_size} | "
          f"{seconds:.4f} |")
    return
  print(f"{machine()}, jax {jax.__version__}, {FLAGS.steps} timed steps per "
        "side\n")
  print(markdown(mixture_throughput(trainer, FLAGS.steps)))


if __name__ == "__main__":
  flags.DEFINE_multi_string("gin_config", [], "Gin config file(s).")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
  flags.DEFINE_integer("steps", 20, "Timed outer steps per side.")
  flags.DEFINE_enum("mode", "sequential", ["sequential", "devices"],
                    "sequential: population vs. lo learners; devices: step "
                    "time on the visible devices.")
  app.run(main)
