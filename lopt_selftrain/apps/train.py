r"""Meta-train a population of learned optimizers (self-training + PBT).

  python -m lopt_selftrain.apps.train \
      --gin_config=gin_configs/selftrain_cpu_demo.gin \
      --train_log_dir=/tmp/selftrain [--gin_bindings=...] [--max_meta_steps=N]

Writes into --train_log_dir (local or gs://): metrics.jsonl (one record per
PBT round, keys in docs/metrics.md), TensorBoard events, operative_config.gin,
checkpoints/. Rerunning the same command resumes from the latest valid
checkpoint; a run dir that cannot be resumed as asked is left untouched with
one `error:` line (--restart, --allow_config_change; see `run_dir`).
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import gin
import jax
from absl import app, flags

from lopt_selftrain import config, sharding, training
from lopt_selftrain.population import PopulationTrainer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_multi_string("gin_config", [],
                            "Gin config file(s), applied in order.")
  flags.DEFINE_multi_string("gin_bindings", [],
                            "Extra gin bindings, applied last.")
  flags.DEFINE_string("train_log_dir", None,
                      "Output directory (local or gs://).")
  flags.DEFINE_integer("max_meta_steps", None,
                       "Stop after this many meta steps (caps num_meta_steps).")
  flags.DEFINE_bool("restart", False,
                    "Move an existing run in --train_log_dir to "
                    "previous_runs/<time>/ and start over.")
  flags.DEFINE_bool("allow_config_change", False,
                    "Resume a run under a gin config other than its own "
                    "(the change is saved and logged).")
  flags.DEFINE_bool("multihost", False,
                    "Call jax.distributed.initialize() (multi-host TPU slices).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.multihost:
    jax.distributed.initialize()
  with config.user_errors_exit():  # start-up: bad input is one line
    if not FLAGS.train_log_dir:
      raise ValueError("--train_log_dir is required")
    if FLAGS.max_meta_steps is not None and FLAGS.max_meta_steps < 0:
      raise ValueError(f"--max_meta_steps must be >= 0, got "
                       f"{FLAGS.max_meta_steps}")
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    config.check_writable(FLAGS.train_log_dir)
    trainer = PopulationTrainer()
    run_config = config.RunConfig()
    sharding.check_population(trainer.population_size)
  try:
    training.train(trainer, FLAGS.train_log_dir, FLAGS.max_meta_steps,
                   run_config, gin.operative_config_str(),
                   restart=FLAGS.restart,
                   allow_config_change=FLAGS.allow_config_change)
  except config.RUN_ERRORS as e:  # the run dir or config; bugs keep a traceback
    config.exit_with_error(e)


if __name__ == "__main__":
  define_flags()
  app.run(main)
