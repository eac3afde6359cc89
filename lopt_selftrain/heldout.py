"""Held-out suite: is a learned optimizer worth using on problems it never saw?

The suite's tasks (`lopt_selftrain.tasks.heldout`) use a dataset or an
architecture that no meta-training mix contains and run 1000-2000 steps: 10-20x
the demo's 100-step meta-training horizon. Each task is trained by the learned optimizer and by
Adam at every learning rate of a grid (vmapped, one compile per task), from the
same initial parameters on the same batches with the same per-step keys, so the
comparison is paired. A record per task holds the final training loss
(`curves.final_value`: mean over the last 10% of steps) of the learned optimizer
and of the best Adam (the lr with the lowest final value), their ratio, and
test loss / accuracy where the task has a test split.
"""

from __future__ import annotations

import functools
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import logging
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.tasks import base as tasks_base
from learned_optimization.tasks import quadratics

from lopt_selftrain import curves, evaluation, export, files, tasks
from lopt_selftrain.tasks.heldout import (
  ClassifierTask,
  HeldoutTask,
  suite_tasks,
)

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


# --- running


@functools.partial(jax.jit, static_argnames=("learned_opt", "family",
                                             "num_tasks", "num_steps"))
def curves_and_params(learned_opt: lopt_base.LearnedOptimizer,
                      family: tasks_base.TaskFamily, thetas: Any,
                      key: jax.Array, batches: Any, num_tasks: int,
                      num_steps: int) -> tuple[jax.Array, Any]:
  """([M, tasks, steps] losses, final params [M, tasks, ...]) of M stacked thetas.

  Every theta trains the same tasks from the same init on the same batches
  and per-step keys.
  """

  def one(theta):
    opt = learned_opt.opt_fn(theta)

    def one_task(task_key, task_batches):
      k_sample, k_init, k_opt, k_steps = jax.random.split(task_key, 4)
      task = family.task_fn(family.sample(k_sample))
      state = opt.init(task.init(k_init), num_steps=num_steps, key=k_opt)

      def step(state, xs):
        step_key, batch = xs
        k_loss, k_update = jax.random.split(step_key)
        loss, grad = jax.value_and_grad(task.loss)(opt.get_params(state),
                                                   k_loss, batch)
        return opt.update(state, grad, loss=loss, key=k_update), loss

      state, losses = jax.lax.scan(
          step, state, (jax.random.split(k_steps, num_steps), task_batches))
      return losses, opt.get_params(state)

    return jax.vmap(one_task, in_axes=(0, 1))(jax.random.split(key, num_tasks),
                                              batches)

  return jax.vmap(one)(thetas)


def adam_thetas(lrs: Sequence[float]) -> tuple[lopt_base.LearnedOptimizer, Any]:
  """lo's LearnableAdam (plain Adam) with one stacked weight set per lr."""
  adam = lopt_base.LearnableAdam(use_summary=False)
  thetas = {k: jnp.full(len(lrs), v)
            for k, v in adam.init(jax.random.PRNGKey(0)).items()}
  thetas["log_lr"] = jnp.log(jnp.asarray(lrs, jnp.float32))
  return adam, thetas


def paired_runs(learned_opt: lopt_base.LearnedOptimizer, theta: Any,
                family: tasks_base.TaskFamily, steps: int, num_tasks: int,
                seed: int, adam_lrs: Sequence[float]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Loss curves and final params of the learned optimizer and each Adam lr.

  Returns:
    ({label: [num_tasks, steps]}, {label: final params [num_tasks, ...]}) with
    "learned" first, then "Adam lr=..." per lr.
  """
  key = jax.random.PRNGKey(seed)
  batches = evaluation.eval_batches(family, num_tasks, steps)
  losses, params = curves_and_params(
      learned_opt, family, jax.tree_util.tree_map(lambda x: x[None], theta),
      key, batches, num_tasks, steps)
  out_curves = {"learned": np.asarray(losses[0])}
  out_params = {"learned": jax.tree_util.tree_map(lambda x: x[0], params)}
  adam, thetas = adam_thetas(adam_lrs)
  losses, params = curves_and_params(adam, family, thetas, key, batches,
                                     num_tasks, steps)
  for i, lr in enumerate(adam_lrs):
    label = f"Adam lr={lr:g}"
    out_curves[label] = np.asarray(losses[i])
    out_params[label] = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
  return out_curves, out_params


def _best_adam(finals: dict[str, float]) -> str:
  """The "Adam lr=..." label with the lowest final value (NaN counts as worst)."""
  return min((k for k in finals if k.startswith("Adam")),
             key=lambda k: np.nan_to_num(finals[k], nan=np.inf))


def _lr(label: str) -> float:
  """The learning rate of an "Adam lr=..." label."""
  return float(label.split("=")[1])


def ratio(learned: float, adam: float) -> float:
  """learned / adam; where tuned Adam reached exactly 0 (float32 underflow,
  e.g. on a quadratic) inf, or 1 if the learned optimizer did too; NaN only
  where the learned optimizer diverged."""
  if math.isnan(learned) or math.isnan(adam):
    return math.nan
  if adam > 0:
    return learned / adam
  return 1.0 if learned == 0 else math.inf


def _test_metrics(task: ClassifierTask, params: Any) -> dict[str, float]:
  """Loss and accuracy on the whole test split."""
  x, y = task.test_arrays
  logp = jax.nn.log_softmax(task.logits(params, x))
  return {"loss": float(-jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))),
          "accuracy": float(jnp.mean(jnp.argmax(logp, -1) == y))}


def run_task(learned_opt: lopt_base.LearnedOptimizer, theta: Any,
             spec: HeldoutTask, steps: int, seed: int,
             adam_lrs: Sequence[float]) -> tuple[dict[str, Any],
                                                 dict[str, np.ndarray]]:
  """(record, {label: [steps] curve}) of one held-out task."""
  task = spec.build()
  family = tasks_base.single_task_to_family(task, name=spec.name)
  losses, params = paired_runs(learned_opt, theta, family, steps, 1, seed,
                               adam_lrs)
  task_curves = {k: v[0] for k, v in losses.items()}
  finals = {k: curves.final_value(v) for k, v in task_curves.items()}
  adam_labels = [k for k in task_curves if k != "learned"]
  best = _best_adam(finals)
  learned, adam = finals["learned"], finals[best]
  record = {
      "task": spec.name,
      "steps": steps,
      "learned_final": learned,
      "adam_final": adam,
      "adam_best_lr": _lr(best),
      "ratio": ratio(learned, adam),
      "learned_diverged": not math.isfinite(learned),
      "adam_finals": {f"{_lr(k):g}": finals[k] for k in adam_labels},
      "why_heldout": spec.why_heldout,
  }
  if getattr(task, "test_arrays", None) is not None:
    for label, prefix in (("learned", "learned"), (best, "adam")):
      one = jax.tree_util.tree_map(lambda x: x[0], params[label])
      for metric, value in _test_metrics(task, one).items():
        record[f"{prefix}_test_{metric}"] = value
  return record, task_curves


def run_suite(learned_opt: lopt_base.LearnedOptimizer, theta: Any,
              specs: Sequence[HeldoutTask], steps_scale: float = 1.0,
              seed: int = 0, adam_lrs: Sequence[float] = ADAM_LRS
              ) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
  """Records and curves of every task; steps = max(1, round(steps * scale))."""
  if steps_scale <= 0 or not adam_lrs or not specs:
    raise ValueError(f"need steps_scale > 0, an Adam lr and a task, got "
                     f"{steps_scale}, {list(adam_lrs)}, {len(specs)} tasks")
  records, all_curves = [], {}
  for spec in specs:
    start = time.time()
    record, task_curves = run_task(learned_opt, theta, spec,
                                   max(1, round(spec.steps * steps_scale)),
                                   seed, adam_lrs)
    logging.info("held-out %s: ratio %.3g (%.0f s)", spec.name, record["ratio"],
                 time.time() - start)
    records.append(record)
    all_curves[spec.name] = task_curves
  return records, all_curves


# --- reporting


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Counts against the issue's targets; a diverged task counts as ratio inf."""
  ratios = np.array([r["ratio"] if math.isfinite(r["ratio"]) else np.inf
                     for r in records])
  return {"tasks": len(records),
          "at_most_1x": int(np.sum(ratios <= 1.0)),
          "at_most_2x": int(np.sum(ratios <= 2.0)),
          "diverged": int(sum(r["learned_diverged"] for r in records)),
          "median_ratio": float(np.median(ratios)),
          "max_ratio": float(np.max(ratios))}


def markdown(records: Sequence[dict[str, Any]], title: str) -> str:
  """The table (ratio < 1: the learned optimizer wins) and a summary line."""
  lines = [f"## {title}", "",
           "| task | steps | learned final | tuned Adam final | Adam lr | ratio "
           "| test loss learned / Adam | test acc learned / Adam |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in records:
    test_loss = test_acc = "-"
    if "learned_test_loss" in r:
      test_loss = f"{r['learned_test_loss']:.3g} / {r['adam_test_loss']:.3g}"
      test_acc = (f"{r['learned_test_accuracy']:.3f} / "
                  f"{r['adam_test_accuracy']:.3f}")
    lines.append(f"| {r['task']} | {r['steps']} | {r['learned_final']:.4g} | "
                 f"{r['adam_final']:.4g} | {r['adam_best_lr']:g} | "
                 f"{r['ratio']:.3g} | {test_loss} | {test_acc} |")
  s = summary(records)
  lines += ["", f"final = mean training loss over the last "
            f"{curves.FINAL_FRACTION:.0%} of steps; ratio = learned / tuned "
            f"Adam (best of the lr grid by final). Ratio <= 1 on "
            f"{s['at_most_1x']}/{s['tasks']} tasks, <= 2 on "
            f"{s['at_most_2x']}/{s['tasks']}; median {s['median_ratio']:.3g}, "
            f"max {s['max_ratio']:.3g}; diverged: {s['diverged']}.", ""]
  return "\n".join(lines)


def plot(all_curves: dict[str, dict[str, np.ndarray]],
         records: Sequence[dict[str, Any]], title: str) -> bytes:
  """PNG: one panel per task; learned (black), best Adam (dashed), other Adams."""
  n = len(all_curves)
  cols = min(n, 4)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows),
                           squeeze=False)
  best = {r["task"]: f"Adam lr={r['adam_best_lr']:g}" for r in records}
  for ax, (name, task_curves) in zip(axes.flat, all_curves.items()):
    for label, curve in task_curves.items():
      style = ({"lw": 2.0, "color": "k"} if label == "learned" else
               {"lw": 1.5, "ls": "--", "color": "C3"} if label == best[name]
               else {"lw": 0.6, "alpha": 0.5})
      ax.plot(np.arange(len(curve)), curve, label=label, **style)
    # Log scale: the ratios compare losses near 1e-7; exact zeros are not
    # drawn. The top follows the learned and best-Adam curves, so a worse
    # learning rate's blow-up does not flatten the panel.
    ax.set_yscale("log", nonpositive="mask")
    shown = np.concatenate([task_curves[k] for k in ("learned", best[name])
                            if k in task_curves])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size:
      ax.set_ylim(top=2 * shown.max())
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=6)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  return buf.getvalue()


def comparison_markdown(runs: dict[str, Sequence[dict[str, Any]]]) -> str:
  """Ratio to tuned Adam per task for several optimizers, and their medians.

  Args:
    runs: {optimizer label: its heldout.json records}, same tasks each.
  """
  labels = list(runs)
  tasks = [r["task"] for r in next(iter(runs.values()))]
  by_task = {k: {r["task"]: r for r in v} for k, v in runs.items()}
  lines = ["| task | " + " | ".join(labels) + " |",
           "| --- |" + " ---: |" * len(labels)]
  for task in tasks:
    lines.append(f"| {task} | " + " | ".join(
        f"{by_task[k][task]['ratio']:.3g}" for k in labels) + " |")
  lines.append("| **median** | " + " | ".join(
      f"**{summary(runs[k])['median_ratio']:.3g}**" for k in labels) + " |")
  return "\n".join(lines) + "\n"


# --- commands (lopt_selftrain.apps.evaluate)


FAMILIES: dict[str, Callable[[], tasks_base.TaskFamily]] = {
    "quadratic": lambda: quadratics.FixedDimQuadraticFamily(10),
    "mnist1d_mlp": tasks.MaskedMLPFamily,
}


def task_family(name: str) -> tasks_base.TaskFamily:
  """The family `name` of `FAMILIES`; ValueError listing the known names."""
  if name not in FAMILIES:
    raise ValueError(f"unknown task {name!r}; known tasks: "
                     f"{', '.join(sorted(FAMILIES))}")
  return FAMILIES[name]()


def family_markdown(task_curves: dict[str, np.ndarray],
                    finals: dict[str, float], best: str, title: str) -> str:
  """One row per optimizer (final and mean loss), the best Adam in bold."""
  lines = [f"## {title}", "", f"| optimizer | final loss (last "
           f"{curves.FINAL_FRACTION:.0%} of steps) | mean loss |",
           "| --- | ---: | ---: |"]
  for label, curve in task_curves.items():
    name = f"**{label}** (best Adam)" if label == best else label
    lines.append(f"| {name} | {finals[label]:.4g} | "
                 f"{float(np.mean(curve)):.4g} |")
  return "\n".join(lines) + "\n"


def evaluate_family(exported: export.Exported, family: tasks_base.TaskFamily,
                    task: str, steps: int, out_dir: str, num_tasks: int = 1,
                    seed: int = 0, adam_lrs: Sequence[float] = ADAM_LRS) -> str:
  """`num_tasks` tasks of `family` (fixed key `seed`), learned vs each Adam lr;
  writes out_dir/results.md and curves.png (task means); returns the markdown."""
  if steps < 1 or num_tasks < 1 or not adam_lrs:
    raise ValueError(f"need steps >= 1, num_tasks >= 1 and an Adam lr, got "
                     f"{steps}, {num_tasks}, {list(adam_lrs)}")
  losses, _ = paired_runs(exported.learned_opt, exported.theta, family, steps,
                          num_tasks, seed, adam_lrs)
  task_curves = {k: v.mean(0) for k, v in losses.items()}
  source = exported.provenance
  title = (f"{task}: {num_tasks} task(s), {steps} steps; learned = member "
           f"{source.get('member', '?')} at step {source.get('step', '?')}")
  finals = {k: curves.final_value(v) for k, v in task_curves.items()}
  best = _best_adam(finals)
  text = family_markdown(task_curves, finals, best, title)
  out = out_dir.rstrip("/")
  files.makedirs(out)
  files.write_atomic(f"{out}/curves.png", plot(
      {task: task_curves}, [{"task": task, "adam_best_lr": _lr(best)}], title))
  files.write_atomic(f"{out}/results.md", text.encode())
  return text


def evaluate_suite(exported: export.Exported, optimizer: str, out_dir: str,
                   task_names: Sequence[str] = (), steps_scale: float = 1.0,
                   seed: int = 0, adam_lrs: Sequence[float] = ADAM_LRS,
                   suite: str = "heldout") -> str:
  """Runs the suite (or the named tasks); writes out_dir/SUITE.json, .md and
  SUITE_curves.png (SUITE: "heldout" or "validation"); returns the markdown."""
  specs = suite_tasks(task_names, suite)
  records, all_curves = run_suite(exported.learned_opt, exported.theta, specs,
                                  steps_scale, seed, adam_lrs)
  source = exported.provenance
  title = (f"{'Held-out' if suite == 'heldout' else 'Validation'} suite: "
           f"{optimizer} (step {source.get('step', '?')}, "
           f"member {source.get('member', '?')}) vs Adam tuned over "
           f"{len(adam_lrs)} learning rates")
  text = markdown(records, title)
  out = out_dir.rstrip("/")
  files.makedirs(out)
  files.write_atomic(f"{out}/{suite}.json",
                     json.dumps(records, indent=1).encode())
  files.write_atomic(f"{out}/{suite}.md", text.encode())
  files.write_atomic(f"{out}/{suite}_curves.png",
                     plot(all_curves, records, title))
  return text
