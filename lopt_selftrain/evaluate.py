r"""absl app: an exported learned optimizer against Adam over a learning-rate grid.

  python -m lopt_selftrain.evaluate --optimizer=lopt.lopt --task=quadratic \
      [--steps=1000] [--num_tasks=1] [--out_dir=eval_quadratic]

A learned optimizer is only useful if it beats a tuned hand-designed one, so
every optimizer trains the same task(s), sampled from the named family with a
fixed key, from the same initial parameters on the same batches (common random
numbers, as in `evaluation`). Writes into --out_dir (local or gs://):
curves.png (task-mean training loss per step) and results.md (final and mean
loss per optimizer; the best Adam learning rate, by mean loss, is marked).

The held-out suite (`lopt_selftrain.heldout`) instead of one task:

  python -m lopt_selftrain.evaluate --suite=heldout --optimizer=NAME_OR_PATH \
      --out_dir=DIR [--tasks=digits_mlp,iris_mlp] [--steps_scale=0.1]

writes DIR/heldout.json (one record per task), DIR/heldout.md (the table) and
DIR/heldout_curves.png. --optimizer is an exported file or the name of a
shipped optimizer (`lopt_selftrain.pretrained.PRETRAINED`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import matplotlib
import numpy as np
import tensorflow as tf
from absl import app, flags
from learned_optimization.tasks import base as tasks_base
from learned_optimization.tasks import quadratics

from lopt_selftrain import config, export, heldout, pretrained, tasks

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

TASKS: dict[str, Callable[[], tasks_base.TaskFamily]] = {
    "quadratic": lambda: quadratics.FixedDimQuadraticFamily(10),
    "mnist1d_mlp": tasks.MaskedMLPFamily,
}
FINAL_FRACTION = 0.05  # "final loss" = mean over the last 5% of steps.
ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

FLAGS = flags.FLAGS


def task_family(name: str) -> tasks_base.TaskFamily:
  """The registered family `name`; ValueError listing the known names otherwise."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
  return TASKS[name]()


def loss_curves(exported: export.Exported, family: tasks_base.TaskFamily,
                steps: int, num_tasks: int, seed: int,
                adam_lrs: Sequence[float]) -> dict[str, np.ndarray]:
  """{label: [steps] mean loss}: "learned" first, then one "Adam lr=..." per lr."""
  losses, _ = heldout.paired_runs(exported.learned_opt, exported.theta, family,
                                  steps, num_tasks, seed, adam_lrs)
  return {k: v.mean(0) for k, v in losses.items()}


def summarize(curves: dict[str, np.ndarray]) -> tuple[dict[str, tuple[float, float]],
                                                      str]:
  """({label: (final, mean)}, label of the best Adam by mean loss; nan = worst)."""
  stats = {}
  for label, curve in curves.items():
    tail = max(1, int(len(curve) * FINAL_FRACTION))
    stats[label] = (float(np.mean(curve[-tail:])), float(np.mean(curve)))
  adams = [k for k in curves if k.startswith("Adam")]
  best = min(adams, key=lambda k: np.nan_to_num(stats[k][1], nan=np.inf))
  return stats, best


def markdown_table(stats: dict[str, tuple[float, float]], best: str) -> str:
  """One row per optimizer, in `stats` order, with the best Adam in bold."""
  lines = [f"| optimizer | final loss (last {FINAL_FRACTION:.0%} of steps) "
           "| mean loss |", "| --- | ---: | ---: |"]
  for label, (final, mean) in stats.items():
    name = f"**{label}** (best Adam)" if label == best else label
    lines.append(f"| {name} | {final:.4g} | {mean:.4g} |")
  return "\n".join(lines) + "\n"


def plot(curves: dict[str, np.ndarray], best: str, title: str) -> bytes:
  """PNG of the curves: learned thick, best Adam dashed, other Adams thin."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, curve in curves.items():
    style = ({"lw": 2.5, "color": "k"} if label == "learned" else
             {"lw": 1.8, "ls": "--"} if label == best else {"lw": 0.8, "alpha": 0.7})
    name = f"{label} (best Adam)" if label == best else label
    ax.plot(np.arange(len(curve)), curve, label=name, **style)
  finite = np.concatenate([c[np.isfinite(c)] for c in curves.values()])
  if finite.size and finite.min() > 0:
    ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("training loss (mean over tasks)")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  return buf.getvalue()


def run(exported: export.Exported, family: tasks_base.TaskFamily, task: str,
        steps: int, out_dir: str, num_tasks: int = 1, seed: int = 0,
        adam_lrs: Sequence[float] = ADAM_LRS) -> str:
  """Evaluates, writes curves.png and results.md; returns the markdown."""
  if steps < 1 or num_tasks < 1 or not adam_lrs:
    raise ValueError(f"need steps >= 1, num_tasks >= 1 and an Adam lr, got "
                     f"{steps}, {num_tasks}, {list(adam_lrs)}")
  curves = loss_curves(exported, family, steps, num_tasks, seed, adam_lrs)
  stats, best = summarize(curves)
  source = exported.provenance
  title = (f"{task}: {num_tasks} task(s), {steps} steps; learned = member "
           f"{source.get('member', '?')} at step {source.get('step', '?')}")
  text = f"## {title}\n\n{markdown_table(stats, best)}"
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(f"{out_dir.rstrip('/')}/curves.png", "wb") as f:
    f.write(plot(curves, best, title))
  with tf.io.gfile.GFile(f"{out_dir.rstrip('/')}/results.md", "w") as f:
    f.write(text)
  return text


def run_heldout(exported: export.Exported, optimizer: str, out_dir: str,
                task_names: Sequence[str] = (), steps_scale: float = 1.0,
                seed: int = 0, adam_lrs: Sequence[float] = heldout.ADAM_LRS
                ) -> str:
  """Runs the held-out suite; writes heldout.json/.md/_curves.png; returns the md."""
  specs = heldout.suite_tasks(task_names)
  records, all_curves = heldout.run_suite(exported.learned_opt, exported.theta,
                                          specs, steps_scale, seed, adam_lrs)
  source = exported.provenance
  title = (f"Held-out suite: {optimizer} (step {source.get('step', '?')}, "
           f"member {source.get('member', '?')}) vs Adam tuned over "
           f"{len(adam_lrs)} learning rates")
  text = heldout.markdown(records, title)
  out = out_dir.rstrip("/")
  tf.io.gfile.makedirs(out)
  with tf.io.gfile.GFile(f"{out}/heldout.json", "w") as f:
    json.dump(records, f, indent=1)
  with tf.io.gfile.GFile(f"{out}/heldout.md", "w") as f:
    f.write(text)
  with tf.io.gfile.GFile(f"{out}/heldout_curves.png", "wb") as f:
    f.write(heldout.plot(all_curves, records, title))
  return text


def cli(optimizer: str | None, task: str | None, steps: int, out_dir: str | None,
        num_tasks: int, seed: int, adam_lrs: Sequence[str],
        suite: str | None = None, task_names: Sequence[str] = (),
        steps_scale: float = 1.0) -> None:
  """The app minus flag parsing: prints the table, or `error: ...` and exit 2."""
  try:
    if suite not in (None, "heldout"):
      raise ValueError(f"unknown --suite {suite!r}; known: heldout")
    if not optimizer or not (task or suite):
      raise ValueError("--optimizer and --task (or --suite) are required")
    lrs = [float(lr) for lr in adam_lrs]
    if suite:
      heldout.suite_tasks(task_names)  # Bad names fail before the file is read.
      exported = export.read(pretrained.resolve(optimizer))
      text = run_heldout(exported, optimizer, out_dir or "eval_heldout",
                         task_names, steps_scale, seed, lrs)
    else:
      family = task_family(task)
      exported = export.read(pretrained.resolve(optimizer))
      text = run(exported, family, task, steps, out_dir or f"eval_{task}",
                 num_tasks, seed, lrs)
  except ValueError as e:  # Bad flags, task name or file (ExportError): one line.
    config.exit_with_error(e)
  print(text)


def define_flags() -> None:
  """The app's flags; defined only when run as an app, so imports never clash."""
  flags.DEFINE_string("optimizer", None,
                      "Exported optimizer file (lopt_selftrain.export) or a "
                      "shipped name (lopt_selftrain.pretrained.PRETRAINED).")
  flags.DEFINE_string("task", None, f"Task family: one of {sorted(TASKS)}.")
  flags.DEFINE_string("suite", None, "'heldout': the held-out suite instead "
                      "of --task (its Adam grid unless --adam_lrs is given).")
  flags.DEFINE_list("tasks", [], "Held-out tasks to run (default: all of "
                    "lopt_selftrain.heldout.SUITE).")
  flags.DEFINE_float("steps_scale", 1.0, "Multiplies every held-out task's "
                     "step count (e.g. 0.05 for a quick check).")
  flags.DEFINE_integer("steps", 1000, "Training steps per task.")
  flags.DEFINE_integer("num_tasks", 1, "Tasks sampled from the family (curves "
                       "are averaged over them).")
  flags.DEFINE_integer("seed", 0, "Decides the tasks, their init and batches.")
  flags.DEFINE_list("adam_lrs", [f"{lr:g}" for lr in ADAM_LRS],
                    "Adam learning rates to compare against.")
  flags.DEFINE_string("out_dir", None, "Output directory (default: eval_<task>).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  adam_lrs = FLAGS.adam_lrs
  if FLAGS.suite and not FLAGS["adam_lrs"].present:
    adam_lrs = [f"{lr:g}" for lr in heldout.ADAM_LRS]
  cli(FLAGS.optimizer, FLAGS.task, FLAGS.steps, FLAGS.out_dir, FLAGS.num_tasks,
      FLAGS.seed, adam_lrs, FLAGS.suite, FLAGS.tasks, FLAGS.steps_scale)


if __name__ == "__main__":
  define_flags()
  app.run(main)
