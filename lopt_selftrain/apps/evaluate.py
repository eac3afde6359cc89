r"""An exported learned optimizer against Adam tuned over a learning-rate grid.

The held-out suite (`lopt_selftrain.heldout`):

  python -m lopt_selftrain.apps.evaluate --suite=heldout --optimizer=NAME_OR_PATH \
      --out_dir=DIR [--tasks=digits_mlp,iris_mlp] [--steps_scale=0.1]

writes DIR/heldout.json (one record per task), DIR/heldout.md (the table) and
DIR/heldout_curves.png; --suite=validation runs `tasks.heldout.VALIDATION`
(the suite `lopt_selftrain.apps.select` chooses by) into DIR/validation.*. One task family instead:

  python -m lopt_selftrain.apps.evaluate --optimizer=lopt.lopt --task=quadratic \
      [--steps=1000] [--num_tasks=1] [--out_dir=eval_quadratic]

writes curves.png and results.md. --optimizer is an exported file or the name
of a shipped optimizer (`lopt_selftrain.PRETRAINED`). Every optimizer trains
the same tasks from the same initial parameters on the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import config, export, heldout, pretrained
from lopt_selftrain.tasks import heldout as heldout_tasks

FLAGS = flags.FLAGS


def cli(optimizer: str | None, task: str | None, steps: int, out_dir: str | None,
        num_tasks: int, seed: int, adam_lrs: Sequence[str],
        suite: str | None = None, task_names: Sequence[str] = (),
        steps_scale: float = 1.0) -> None:
  """The app minus flag parsing: prints the table, or `error: ...` and exit 2."""
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if suite not in (None, *heldout_tasks.SUITES):
      raise ValueError(f"unknown --suite {suite!r}; known: "
                       f"{', '.join(heldout_tasks.SUITES)}")
    if not optimizer or not (task or suite):
      raise ValueError("--optimizer and --task (or --suite) are required")
    lrs = [float(lr) for lr in adam_lrs]
    if suite:
      heldout_tasks.suite_tasks(task_names, suite)  # Fail before reading.
      exported = export.read(pretrained.resolve(optimizer))
      text = heldout.evaluate_suite(exported, optimizer,
                                    out_dir or f"eval_{suite}", task_names,
                                    steps_scale, seed, lrs, suite)
    else:
      family = heldout.task_family(task)
      exported = export.read(pretrained.resolve(optimizer))
      text = heldout.evaluate_family(exported, family, task, steps,
                                     out_dir or f"eval_{task}", num_tasks,
                                     seed, lrs)
  print(text)


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_string("optimizer", None,
                      "Exported optimizer file (lopt_selftrain.apps.export) "
                      "or a shipped name (lopt_selftrain.PRETRAINED).")
  flags.DEFINE_string("task", None,
                      f"Task family: one of {sorted(heldout.FAMILIES)}.")
  flags.DEFINE_string("suite", None, "'heldout' (the test suite) or "
                      "'validation' (the suite to choose by) instead of --task.")
  flags.DEFINE_list("tasks", [], "Tasks of --suite to run (default: all of "
                    "lopt_selftrain.tasks.heldout.SUITE or VALIDATION).")
  flags.DEFINE_float("steps_scale", 1.0, "Multiplies every held-out task's "
                     "step count (e.g. 0.05 for a quick check).")
  flags.DEFINE_integer("steps", 1000, "Training steps per task (--task).")
  flags.DEFINE_integer("num_tasks", 1, "Tasks sampled from the family (curves "
                       "are averaged over them).")
  flags.DEFINE_integer("seed", 0, "Decides the tasks, their init and batches.")
  flags.DEFINE_list("adam_lrs", [f"{lr:g}" for lr in heldout.ADAM_LRS],
                    "Adam learning rates to compare against.")
  flags.DEFINE_string("out_dir", None, "Output directory (default: eval_<task> "
                      "or eval_heldout).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli(FLAGS.optimizer, FLAGS.task, FLAGS.steps, FLAGS.out_dir, FLAGS.num_tasks,
      FLAGS.seed, FLAGS.adam_lrs, FLAGS.suite, FLAGS.tasks, FLAGS.steps_scale)


if __name__ == "__main__":
  define_flags()
  app.run(main)
