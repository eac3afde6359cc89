r"""Wall time of one jitted, vmapped inner step per family of a mixture.

Why: the population trainer spends nearly all its time in inner steps of
`num_tasks` vmapped tasks, so this per-family number decides which families
fit a CPU demo and sets sensible mixture weights. Measures loss + gradient +
an Adam update for `num_tasks` tasks in one jit (compile excluded; median of
repeats), on whatever device JAX uses.

    python -m lopt_selftrain.apps.step_time \
        [--gin_config=gin_configs/tasks/mix_cpu_demo.gin] [--num_tasks=8]
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from learned_optimization import training
from learned_optimization.tasks import base

from lopt_selftrain.tasks.mixture import TaskMixture

DEMO_GIN = (pathlib.Path(__file__).resolve().parents[2] / "gin_configs" /
            "tasks" / "mix_cpu_demo.gin")

InnerState = tuple[Any, Any, Any, Any]  # (cfgs, params, model_states, opt_states)


def vmapped_inner_step(
    family: base.TaskFamily, optimizer: optax.GradientTransformation
) -> tuple[Callable[[jax.Array], InnerState],
           Callable[[InnerState, jax.Array, Any], tuple[InnerState, jax.Array]]]:
  """jitted (init, step) that sample and train a batch of tasks of `family`.

  Mirrors lo's truncated unroll: one vmap over tasks sampled from one family.

  Returns:
    init(keys[num_tasks]) -> state, and step(state, keys[num_tasks], batch) ->
    (state, losses[num_tasks]), where `batch` has a leading num_tasks axis (or
    is () for data-free families).
  """

  def init_one(key):
    k_cfg, k_init = jax.random.split(key)
    cfg = family.sample(k_cfg)
    params, model_state = family.task_fn(cfg).init_with_state(k_init)
    return cfg, params, model_state, optimizer.init(params)

  def step_one(state, key, batch):
    cfg, params, model_state, opt_state = state
    task = family.task_fn(cfg)
    (loss, model_state), grads = jax.value_and_grad(
        task.loss_with_state, has_aux=True)(params, model_state, key, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (cfg, params, model_state, opt_state), loss

  batch_axis = None if family.datasets is None else 0
  return (jax.jit(jax.vmap(init_one)),
          jax.jit(jax.vmap(step_one, in_axes=(0, 0, batch_axis))))


def time_family(family: base.TaskFamily, num_tasks: int,
                repeats: int) -> dict[str, float]:
  """Compile time, median step time and parameter count for one family."""
  init, step = vmapped_inner_step(family, optax.adam(1e-3))
  keys = jax.random.split(jax.random.PRNGKey(0), num_tasks)
  state = init(keys)
  batch = training.vec_get_batch(family, num_tasks)
  start = time.perf_counter()
  state, losses = step(state, keys, batch)
  jax.block_until_ready(losses)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, losses = step(state, keys, batch)
    jax.block_until_ready(losses)
    times.append(time.perf_counter() - start)
  params_per_task = sum(x.size for x in jax.tree_util.tree_leaves(state[1]))
  return {"params": params_per_task // num_tasks, "compile_s": compile_s,
          "median_ms": 1e3 * float(np.median(times))}


def markdown_table(mixture: TaskMixture, num_tasks: int, repeats: int) -> str:
  """One row per family: weight, parameters per task, compile and step time."""
  device = jax.devices()[0]
  rows = [
      f"Inner step (loss+grad+Adam), {num_tasks} tasks vmapped, "
      f"{device.platform} x{os.cpu_count()} cores, median of {repeats}:",
      "",
      "| family | weight | params/task | compile s | step ms |",
      "| --- | ---: | ---: | ---: | ---: |",
  ]
  for name, weight, family in zip(mixture.names, mixture.weights,
                                  mixture.families, strict=True):
    r = time_family(family, num_tasks, repeats)
    rows.append(f"| {name} | {weight:.2f} | {r['params']} | "
                f"{r['compile_s']:.2f} | {r['median_ms']:.3f} |")
  return "\n".join(rows)
