"""Which member to ship: chosen on a validation suite, not on the test suite.

A run's meta-loss ranks members on the meta-training distribution, and
ranked three seeds of one config in the wrong order on the held-out suite
(docs/heldout_history.md). The held-out suite (`tasks.heldout.SUITE`) is the
test set and must not choose. `tasks.heldout.VALIDATION` is a second suite
built the same way on generated data and MNIST-1D (wider and deeper nets,
tiny sets, long runs, a 1-D convnet, a quadratic), none of it in the held-out
suite: every member of every given run trains each validation task (members
vmapped, one compile per run and task) next to Adam at each learning rate of
a grid, from the same init on the same batches, on each draw (seed) asked
for: `apps.select` uses two, and each draw of a task counts as a task (on
one draw, the four-seed choice among the conv config's runs was a member
that a second draw of one task shows stalling: docs/heldout.md). The
ranking follows the issue's targets (<= 2x tuned Adam's final training loss
on every task, <= 1x on half): the fewest validation tasks beyond 2x wins,
then the lowest median ratio, then the lowest geometric mean. (Until
2026-11-27's fifth session the median came first; with the deep, wide
validation task, members of nearly the same median differed in how many
tasks they missed 2x on; docs/heldout_history.md.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import jax
import numpy as np
from absl import logging
from learned_optimization.tasks import base as tasks_base

from lopt_selftrain import curves, evaluation, heldout, members
from lopt_selftrain.tasks.heldout import HeldoutTask

_TINY = float(np.finfo(np.float32).tiny)
WITHIN = 2.0  # The per-task target: learned final <= 2x tuned Adam's.


def _finals(learned_opt: Any, thetas: Any, family: tasks_base.TaskFamily,
            batches: Any, steps: int, seed: int) -> np.ndarray:
  """[M] final training losses of M stacked thetas on the family's one task
  (inf where a run diverged, at least float32's smallest normal number);
  the same init and keys for any thetas."""
  losses, _ = heldout.curves_and_params(
      learned_opt, family, thetas, jax.random.PRNGKey(seed), batches, 1, steps)
  finals = np.array([curves.final_value(c) for c in np.asarray(losses[:, 0])])
  # A run that converged to exactly 0 (float32 underflow) still ranks.
  return np.where(np.isfinite(finals), np.maximum(finals, _TINY), np.inf)


def _distinct(thetas: Any) -> tuple[list[int], list[int]]:
  """(first member of each distinct weight set, each member's index into it).

  PBT copies winners over losers, so a population often holds duplicates;
  each distinct member is trained once.
  """
  leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(thetas)]
  first: dict[bytes, int] = {}
  inverse = [first.setdefault(b"".join(x[m].tobytes() for x in leaves), len(first))
             for m in range(len(leaves[0]))]
  return [inverse.index(i) for i in range(len(first))], inverse


def validation_records(populations: Sequence[members.Population],
                       specs: Sequence[HeldoutTask], steps_scale: float = 1.0,
                       seeds: Sequence[int] = (0,),
                       adam_lrs: Sequence[float] = heldout.ADAM_LRS
                       ) -> list[dict[str, Any]]:
  """Per task and draw: tuned Adam's final loss and every member's ratio to it.

  Each seed in `seeds` is a draw (the init and per-step keys); every draw of a
  task is one record and counts like a task of its own in `scores`, so a late
  jump that lands badly on one draw weighs less than on every draw.

  Returns:
    One record per task and seed: `task`, `seed`, `steps`, `adam_final`,
    `adam_best_lr` (Adam tuned on that draw) and `ratios`, a list per
    population of [members] learned_final / adam_final (inf where a member
    diverged).
  """
  if (steps_scale <= 0 or not adam_lrs or not specs or not populations
      or not seeds):
    raise ValueError(f"need steps_scale > 0, an Adam lr, a task, a run and a "
                     f"seed, got {steps_scale}, {list(adam_lrs)}, {len(specs)} "
                     f"tasks, {len(populations)} runs, seeds {list(seeds)}")
  adam, adam_thetas = heldout.adam_thetas(adam_lrs)
  records = []
  for spec, seed in itertools.product(specs, seeds):
    steps = max(1, round(spec.steps * steps_scale))
    family = tasks_base.single_task_to_family(spec.build(), name=spec.name)
    batches = evaluation.eval_batches(family, 1, steps)  # Drawn once: shared.
    adam_finals = _finals(adam, adam_thetas, family, batches, steps, seed)
    best = int(np.argmin(adam_finals))
    ratios = []
    for p in populations:
      distinct, inverse = _distinct(p.thetas)
      index = np.asarray(distinct)
      thetas = jax.tree_util.tree_map(lambda x, i=index: x[i], p.thetas)
      finals = _finals(p.learned_opt, thetas, family, batches, steps, seed)
      ratios.append((finals[inverse] / adam_finals[best]).tolist())
    logging.info("validation %s (seed %d): best member ratio %.3g", spec.name,
                 seed, min(min(r) for r in ratios))
    records.append({"task": spec.name, "seed": seed, "steps": steps,
                    "adam_final": float(adam_finals[best]),
                    "adam_best_lr": float(adam_lrs[best]), "ratios": ratios})
  return records


def scores(records: Sequence[dict[str, Any]]) -> list[np.ndarray]:
  """Per population, [members, 3]: (tasks beyond WITHIN x tuned Adam, median
  ratio, geometric-mean ratio); lower is better in each."""
  out = []
  for i in range(len(records[0]["ratios"])):
    ratios = np.array([r["ratios"][i] for r in records])  # [tasks, members]
    with np.errstate(divide="ignore"):
      log = np.log(ratios)
    out.append(np.stack([np.sum(~(ratios <= WITHIN), 0), np.median(ratios, 0),
                         np.exp(np.mean(log, 0))], -1))
  return out


def choose(records: Sequence[dict[str, Any]]) -> tuple[int, int]:
  """(population, member) with the fewest tasks beyond WITHIN x tuned Adam,
  ties by the median ratio, then by the geometric mean."""
  ranked = [(tuple(score), i, m) for i, s in enumerate(scores(records))
            for m, score in enumerate(s)]
  _, population, member = min(ranked)
  return population, member


def record_name(record: dict[str, Any], records: Sequence[dict[str, Any]]
                ) -> str:
  """The task's name, with its seed where the records hold several draws."""
  if len({r.get("seed", 0) for r in records}) == 1:
    return record["task"]
  return f"{record['task']} s{record['seed']}"


def markdown(populations: Sequence[members.Population],
             records: Sequence[dict[str, Any]], chosen: tuple[int, int]) -> str:
  """One row per member: meta-loss, ratio per validation task, the scores."""
  lines = ["| run | member | meta-loss | "
           + " | ".join(record_name(r, records) for r in records)
           + f" | beyond {WITHIN:g}x | median | geo. mean |",
           "| --- | ---: | ---: | " + "---: | " * (len(records) + 3)]
  for i, (population, score) in enumerate(zip(populations, scores(records))):
    for m, (misses, median, geo) in enumerate(score):
      cells = [f"{r['ratios'][i][m]:.3g}" for r in records]
      mark = "**" if (i, m) == chosen else ""
      lines.append(f"| {population.run_dir} | {mark}{m}{mark} | "
                   f"{population.meta_loss[m]:.3f} | " + " | ".join(cells)
                   + f" | {mark}{misses:g}{mark} | {mark}{median:.3g}{mark} "
                   f"| {geo:.3g} |")
  adam = ", ".join(f"{record_name(r, records)} {r['adam_final']:.3g} "
                   f"(lr {r['adam_best_lr']:g})" for r in records)
  return "\n".join(lines) + f"\n\nTuned Adam's final training loss: {adam}.\n"

