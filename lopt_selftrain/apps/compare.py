r"""The paper's comparison on one machine: self-training vs Adam outer-training.

  python -m lopt_selftrain.apps.compare --out_dir=runs/compare [--seeds=0,1,2]

Arms, outputs and the held-out curves: `lopt_selftrain.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import compare, config

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_string("out_dir", None, "Output directory.")
  flags.DEFINE_string("base_config", "gin_configs/selftrain_cpu_demo.gin",
                      "Gin config every arm starts from.")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra bindings for every arm.")
  flags.DEFINE_integer("meta_steps", 600, "Meta steps per arm.")
  flags.DEFINE_list("adam_outer_lrs", ["3e-3", "1e-2", "3e-2"],
                    "Learning rates of the Adam outer-trained arms.")
  flags.DEFINE_list("adam_inner_lrs", ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1",
                                       "3e-1"],
                    "Hand-designed Adam lr grid on the held-out tasks.")
  flags.DEFINE_integer("heldout_tasks", 16, "Held-out tasks per family.")
  flags.DEFINE_integer("heldout_steps", 200, "Inner steps on held-out tasks.")
  flags.DEFINE_integer("throughput_steps", 10,
                       "Timed steps per side of the throughput benchmark (0: skip).")
  flags.DEFINE_bool("skip_no_pbt", False, "Skip the no-PBT ablation arm.")
  flags.DEFINE_list("seeds", [], "If set, run the comparison once per seed "
                    "(out_dir/seed_<S>) and summarise them in seeds.md/json.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if not FLAGS.out_dir:
      raise ValueError("--out_dir is required")
    try:
      seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as e:
      raise ValueError(f"--seeds must be integers: {e}") from e
    kwargs = dict(
        base_config=FLAGS.base_config, meta_steps=FLAGS.meta_steps,
        adam_outer_lrs=FLAGS.adam_outer_lrs, adam_inner_lrs=FLAGS.adam_inner_lrs,
        heldout_tasks=FLAGS.heldout_tasks, heldout_steps=FLAGS.heldout_steps,
        throughput_steps=FLAGS.throughput_steps,
        with_no_pbt=not FLAGS.skip_no_pbt)
  try:
    if seeds:
      compare.compare_seeds(FLAGS.out_dir, seeds, FLAGS.gin_bindings, **kwargs)
    else:
      compare.compare(FLAGS.out_dir, extra_bindings=FLAGS.gin_bindings, **kwargs)
  except compare.StaleArmDirError as e:  # bugs keep their traceback
    config.exit_with_error(e)


if __name__ == "__main__":
  define_flags()
  app.run(main)
