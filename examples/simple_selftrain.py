r"""Learned optimizers that train themselves, wired by hand in plain Python.

Like learned_optimization's examples/simple_lopt_train.py, one short file shows
every loop, without the apps and without a gin file:

  inner step   an lo task (here: a 10-dim quadratic) trained by a learned optimizer
  meta step    `PopulationTrainer.step`: PES meta-gradients of every member, each
               turned into a weight update by `SelfUpdate`, i.e. by a learned
               optimizer of the population itself (no Adam anywhere)
  PBT round    `rounds.pbt_round`, every `INTERVAL` meta steps: evaluate every member
               on shared tasks, the worst copy the best, copies explore their
               self-update scale

    python examples/simple_selftrain.py [META_STEPS]

The settings are the demo's (gin_configs/selftrain_cpu_demo.gin) on the
quadratic family alone: a few minutes on a CPU. Meta-loss = mean training loss
over an evaluation run / initial loss, so 1.0 is no progress.
"""

from __future__ import annotations

import sys

import lopt_selftrain  # first: restores the names lo 0.0.1 needs

# isort: split
import numpy as np
from learned_optimization.learned_optimizers import mlp_lopt
from learned_optimization.outer_trainers import truncation_schedule
from learned_optimization.tasks import quadratics

from lopt_selftrain import rounds

META_STEPS = 300  # the first argument overrides it
INTERVAL = 25  # meta steps between PBT rounds


def build_trainer(meta_steps: int, interval: int) -> lopt_selftrain.PopulationTrainer:
  """A population of 8 randomly initialised MLP learned optimizers that
  self-train on lo's quadratic family."""
  tasks = lopt_selftrain.TaskMixture([quadratics.FixedDimQuadraticFamily(10)],
                                     names=["quadratic10"])
  # lo's per-parameter MLP optimizer with its default (tiny) output scale:
  # random members take tiny steps, on the tasks and on themselves.
  learned_opt = mlp_lopt.MLPLOpt(step_mult=0.001, compute_summary=False)
  return lopt_selftrain.PopulationTrainer(
      learned_opt=learned_opt,
      task_mixture=tasks,
      # The paper's outer optimizer: a learned optimizer computes the step
      # (bounded to RMS 3e-3 per tensor, then scaled per member).
      outer_opt=lopt_selftrain.SelfUpdate(step_scale=1.0, max_step_rms=3e-3),
      population_size=8,
      estimator=lopt_selftrain.EstimatorConfig(
          kind="pes", num_tasks=8, trunc_length=10, steps_per_jit=10,
          trunc_sched=truncation_schedule.ConstantTruncationSchedule(100)),
      pbt_config=lopt_selftrain.PBTConfig(
          interval=interval, exploit_fraction=0.25, explore_factors=(0.5, 2.0),
          step_scale_range=(0.25, 4.0)),
      eval_config=lopt_selftrain.EvalConfig(num_tasks=8, num_steps=100),
      seed=0,
      num_meta_steps=meta_steps)


def main(meta_steps: int = META_STEPS, interval: int = INTERVAL) -> list[float]:
  """Self-trains for `meta_steps`; returns the best meta-loss of every round."""
  trainer = build_trainer(meta_steps, interval)
  state = trainer.init()
  last_good = rounds.without_unrolls(state)  # what a total divergence restores
  restores = rounds.Restores()
  best = []
  for step in range(meta_steps + 1):
    if step % interval == 0 or step == meta_steps:
      result = rounds.pbt_round(trainer, state, last_good, restores)
      state, last_good, restores = result.state, result.last_good, result.restores
      best.append(float(np.nanmin(result.meta_loss)))
      copies = sum(e["reason"] == "exploit" for e in result.events)
      print(f"meta step {step:4d}  meta-loss best {best[-1]:.3f}  "
            f"median {np.nanmedian(result.meta_loss):.3f}  "
            f"PBT copies {copies}", flush=True)
    if step < meta_steps:
      state, _ = trainer.step(state, step)  # one meta step of every member
  print(f"final best meta-loss (mean of the last 10% of rounds): "
        f"{lopt_selftrain.final_value(best):.3f}")
  return best


if __name__ == "__main__":
  steps = int(sys.argv[1]) if len(sys.argv) > 1 else META_STEPS
  main(steps, min(INTERVAL, max(1, steps // 2)))
