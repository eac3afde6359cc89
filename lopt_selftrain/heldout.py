"""Held-out suite: is a learned optimizer worth using on problems it never saw?

Every task here uses a dataset or an architecture that no meta-training mix
contains (`tests/test_tasks.py` asserts that no mixture config can reach
scikit-learn's `digits`), and runs 1000-2000 steps: 10-20x the demo's 100-step
meta-training horizon. Each task is trained by the learned optimizer and by
Adam at every learning rate of a grid (vmapped, one compile per task), from the
same initial parameters on the same batches with the same per-step keys, so the
comparison is paired. A record per task holds the final training loss
(`curves.final_value`: mean over the last 10% of steps) of the learned optimizer
and of the best Adam (the lr with the lowest final value), their ratio, and
test loss / accuracy where the task has a test split.

Data comes from scikit-learn's bundled datasets (no download), standardised
with the training split's statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import io
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
from learned_optimization.tasks.datasets import base as datasets_base

from lopt_selftrain import curves, evaluation
from lopt_selftrain.tasks import data

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


# --- data: scikit-learn's bundled datasets, as lo Datasets


def sklearn_arrays(name: str, seed: int = 0, test_fraction: float = 0.2
                   ) -> tuple[data.Arrays, data.Arrays]:
  """((x, y) train, (x, y) test) of a bundled scikit-learn classification set.

  Features are standardised with the training part's mean and std; `digits`
  keeps its 8x8 image shape (with a channel axis) so conv nets can use it.
  """
  from sklearn import datasets as skd  # pylint: disable=g-import-not-at-top

  loaders = {"digits": skd.load_digits, "breast_cancer": skd.load_breast_cancer,
             "wine": skd.load_wine, "iris": skd.load_iris}
  if name not in loaders:
    raise ValueError(f"unknown sklearn dataset {name!r}; known: {sorted(loaders)}")
  x, y = loaders[name](return_X_y=True)
  x, y = x.astype(np.float32), y.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(y))
  n_test = int(len(y) * test_fraction)
  test, train = order[:n_test], order[n_test:]
  mean, std = x[train].mean(0), x[train].std(0) + 1e-6
  x = (x - mean) / std
  if name == "digits":
    x = x.reshape(-1, 8, 8, 1)
  return (x[train], y[train]), (x[test], y[test])


# --- tasks


class ClassifierTask(tasks_base.Task):
  """Cross-entropy of `logits_fn(params, images)`; `init_fn(key)` -> params.

  `test_arrays` (inputs, labels), when set, is the whole test split.
  """

  def __init__(self, datasets: datasets_base.Datasets,
               init_fn: Callable[[jax.Array], Any],
               logits_fn: Callable[[Any, jax.Array], jax.Array]):
    super().__init__()
    self.datasets = datasets
    self.init = init_fn
    self.logits = logits_fn
    self.test_arrays: data.Arrays | None = None

  def loss(self, params: Any, key: jax.Array, batch: Any) -> jax.Array:
    del key  # deterministic model
    logp = jax.nn.log_softmax(self.logits(params, batch["image"]))
    return -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))


def _dense_init(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
  keys = jax.random.split(key, len(sizes) - 1)
  return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
          for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def _dense_apply(layers: Sequence[dict[str, jax.Array]], h: jax.Array,
                 act: Callable[[jax.Array], jax.Array]) -> jax.Array:
  h = jnp.reshape(h, (h.shape[0], -1))
  for i, layer in enumerate(layers):
    h = h @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      h = act(h)
  return h


def mlp_task(datasets: datasets_base.Datasets, hidden: Sequence[int],
             act: Callable[[jax.Array], jax.Array] = jax.nn.relu
             ) -> ClassifierTask:
  """MLP classifier (no hidden layers: logistic regression)."""
  shape = datasets.abstract_batch["image"].shape[1:]
  sizes = [int(np.prod(shape)), *hidden, datasets.extra_info["num_classes"]]
  return ClassifierTask(datasets, lambda key: _dense_init(key, sizes),
                        lambda p, x: _dense_apply(p, x, act))


def conv2d_task(datasets: datasets_base.Datasets,
                channels: Sequence[int] = (16, 32)) -> ClassifierTask:
  """3x3 conv layers (the last with stride 2), ReLU, then a dense classifier."""
  h, w, c_in = datasets.abstract_batch["image"].shape[1:]
  num_classes = datasets.extra_info["num_classes"]
  strides = [1] * (len(channels) - 1) + [2]
  out_hw = -(-h // 2) * -(-w // 2)

  def init(key):
    keys = jax.random.split(key, len(channels) + 1)
    convs, c = [], c_in
    for k, c_out in zip(keys[:-1], channels, strict=True):
      convs.append({"w": jax.random.normal(k, (3, 3, c, c_out)) / np.sqrt(9 * c),
                    "b": jnp.zeros(c_out)})
      c = c_out
    return {"convs": convs,
            "out": _dense_init(keys[-1], [out_hw * c, num_classes])}

  def logits(params, x):
    for layer, stride in zip(params["convs"], strides, strict=True):
      x = jax.lax.conv_general_dilated(
          x, layer["w"], (stride, stride), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      x = jax.nn.relu(x + layer["b"])
    return _dense_apply(params["out"], x, jax.nn.relu)

  return ClassifierTask(datasets, init, logits)


class QuadraticTask(tasks_base.Task):
  """0.5 * sum_i h_i x_i^2 with curvatures log-spaced over `condition` (no data)."""

  def __init__(self, dim: int, condition: float):
    super().__init__()
    self.datasets = None
    self._dim = dim
    self._h = jnp.asarray(np.logspace(0, -np.log10(condition), dim), jnp.float32)

  def init(self, key: jax.Array) -> jax.Array:
    return jax.random.normal(key, (self._dim,))

  def loss(self, params: jax.Array, key: jax.Array, batch: Any) -> jax.Array:
    del key, batch
    return 0.5 * jnp.sum(self._h * jnp.square(params))


@dataclasses.dataclass(frozen=True)
class HeldoutTask:
  """One suite entry: `build()` -> lo Task, trained for `steps` steps."""
  name: str
  steps: int
  build: Callable[[], tasks_base.Task]
  why_heldout: str


def _sk(name: str, batch_size: int, fn: Callable[..., ClassifierTask],
        **kwargs: Any) -> Callable[[], ClassifierTask]:
  """Builder of `fn(datasets, **kwargs)` on a scikit-learn dataset."""

  def build():
    train, test = sklearn_arrays(name)
    # 15% validation carve: the small sets still fill a batch in every split.
    datasets = data.array_datasets(train, test, batch_size=batch_size,
                                   num_classes=int(train[1].max()) + 1,
                                   name=name, valid_fraction=0.15)
    task = fn(datasets, **kwargs)
    task.test_arrays = test
    return task

  return build


SUITE: tuple[HeldoutTask, ...] = (
    HeldoutTask("digits_mlp", 1000, _sk("digits", 128, mlp_task, hidden=[128]),
                "dataset (digits, 8x8 images) never in meta-training"),
    HeldoutTask("digits_conv", 1000, _sk("digits", 128, conv2d_task),
                "dataset and 2-D convolutions never in meta-training"),
    HeldoutTask("digits_mlp_wide_deep", 1000,
                _sk("digits", 128, mlp_task, hidden=[256] * 4),
                "4 x 256 units: 4x wider than any meta-training MLP (<= 64)"),
    HeldoutTask("breast_cancer_mlp", 2000,
                _sk("breast_cancer", 64, mlp_task, hidden=[32], act=jnp.tanh),
                "dataset never in meta-training; binary task"),
    HeldoutTask("wine_logreg", 2000, _sk("wine", 16, mlp_task, hidden=[]),
                "dataset never in meta-training; convex (logistic regression)"),
    HeldoutTask("iris_mlp", 1000, _sk("iris", 16, mlp_task, hidden=[16]),
                "dataset never in meta-training; tiny data"),
    HeldoutTask("quadratic100_cond1e4", 2000, lambda: QuadraticTask(100, 1e4),
                "dim 100 and condition 1e4 (meta-training: dim <= 20, <= 1e3)"),
)


def suite_tasks(names: Sequence[str] | None = None) -> tuple[HeldoutTask, ...]:
  """The suite, or the named subset in suite order; ValueError on unknown names."""
  if not names:
    return SUITE
  known = {t.name for t in SUITE}
  unknown = sorted(set(names) - known)
  if unknown:
    raise ValueError(f"unknown held-out task(s) {unknown}; known: {sorted(known)}")
  return tuple(t for t in SUITE if t.name in names)


# --- running


@functools.partial(jax.jit, static_argnames=("learned_opt", "family",
                                             "num_tasks", "num_steps"))
def _curves_and_params(learned_opt: lopt_base.LearnedOptimizer,
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


def _adam_thetas(lrs: Sequence[float]) -> tuple[lopt_base.LearnedOptimizer, Any]:
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
  losses, params = _curves_and_params(
      learned_opt, family, jax.tree_util.tree_map(lambda x: x[None], theta),
      key, batches, num_tasks, steps)
  out_curves = {"learned": np.asarray(losses[0])}
  out_params = {"learned": jax.tree_util.tree_map(lambda x: x[0], params)}
  adam, thetas = _adam_thetas(adam_lrs)
  losses, params = _curves_and_params(adam, family, thetas, key, batches,
                                      num_tasks, steps)
  for i, lr in enumerate(adam_lrs):
    label = f"Adam lr={lr:g}"
    out_curves[label] = np.asarray(losses[i])
    out_params[label] = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
  return out_curves, out_params


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
  best = min(adam_labels, key=lambda k: np.nan_to_num(finals[k], nan=np.inf))
  learned, adam = finals["learned"], finals[best]
  record = {
      "task": spec.name,
      "steps": steps,
      "learned_final": learned,
      "adam_final": adam,
      "adam_best_lr": float(best.split("=")[1]),
      "ratio": learned / adam if adam > 0 else math.nan,
      "learned_diverged": not math.isfinite(learned),
      "adam_finals": {k.split("=")[1]: finals[k] for k in adam_labels},
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
    finite = np.concatenate([c[np.isfinite(c)] for c in task_curves.values()])
    if finite.size and finite.min() > 0:
      ax.set_yscale("log")
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
