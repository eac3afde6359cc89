r"""Throughput: the vmapped population step vs sequential lo learners, or the
population step time on the visible devices (`lopt_selftrain.benchmark`).

  python -m lopt_selftrain.apps.benchmark --gin_config=gin_configs/selftrain_cpu_demo.gin
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m \
      lopt_selftrain.apps.benchmark --gin_config=... --mode=devices
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import jax
from absl import app, flags

from lopt_selftrain import benchmark, config
from lopt_selftrain.population import PopulationTrainer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_multi_string("gin_config", [], "Gin config file(s).")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
  flags.DEFINE_integer("steps", 20, "Timed meta steps per side.")
  flags.DEFINE_enum("mode", "sequential", ["sequential", "devices"],
                    "sequential: population vs lo learners; devices: step "
                    "time on the visible devices.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    trainer = PopulationTrainer()
  if FLAGS.mode == "devices":
    seconds = benchmark.population_step_seconds(trainer, FLAGS.steps)
    print(f"| {jax.device_count()} | {trainer.population_size} | "
          f"{seconds:.4f} |")
    return
  print(f"{benchmark.machine()}, jax {jax.__version__}, {FLAGS.steps} timed "
        "steps per side\n")
  print(benchmark.markdown(benchmark.mixture_throughput(trainer, FLAGS.steps)))


if __name__ == "__main__":
  define_flags()
  app.run(main)
