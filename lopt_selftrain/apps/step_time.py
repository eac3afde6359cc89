r"""Compile and step time of one vmapped inner step per family of a mixture
(`lopt_selftrain.tasks.step_time`).

  python -m lopt_selftrain.apps.step_time \
      [--gin_config=gin_configs/tasks/mix_cpu_demo.gin] [--num_tasks=8]
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import config
from lopt_selftrain.tasks import step_time
from lopt_selftrain.tasks.mixture import TaskMixture

FLAGS = flags.FLAGS


def cli(gin_configs: Sequence[str], gin_bindings: Sequence[str],
        num_tasks: int, repeats: int) -> None:
  """The app minus flag parsing: the table, or `error: ...` and exit 2."""
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if num_tasks < 1 or repeats < 1:
      raise ValueError(f"--num_tasks and --repeats must be >= 1, got "
                       f"{num_tasks} and {repeats}")
    config.parse(list(gin_configs) or [str(step_time.DEMO_GIN)], gin_bindings)
    mixture = TaskMixture()
  print(step_time.markdown_table(mixture, num_tasks, repeats))


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_multi_string("gin_config", [], "Gin file(s) binding TaskMixture "
                            f"(default {step_time.DEMO_GIN.name}).")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
  flags.DEFINE_integer("num_tasks", 8, "Tasks vmapped in one inner step.")
  flags.DEFINE_integer("repeats", 50, "Timed steps per family (median).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli(FLAGS.gin_config, FLAGS.gin_bindings, FLAGS.num_tasks, FLAGS.repeats)


if __name__ == "__main__":
  define_flags()
  app.run(main)
