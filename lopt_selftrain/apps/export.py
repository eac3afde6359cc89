r"""Export one member of a training run as a portable optimizer file.

  python -m lopt_selftrain.apps.export --run_dir=runs/demo --out=lopt.lopt \
      [--member=K]

Without --member the member with the lowest latest meta-loss is exported. Load
the file with `lopt_selftrain.load_optax(path)` (format: `lopt_selftrain.export`).
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import config, export

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_string("run_dir", None, "Training run directory (--train_log_dir).")
  flags.DEFINE_string("out", None, "Exported optimizer file to write.")
  flags.DEFINE_integer("member", None,
                       "Population member to export (default: best meta-loss).")


def cli(run_dir: str | None, out: str | None, member: int | None) -> None:
  """The app minus flag parsing: a summary line, or `error: ...` and exit 2."""
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if not run_dir or not out:
      raise export.ExportError("--run_dir and --out are required")
    provenance = export.export_run(run_dir, out, member)
  print(f"exported member {provenance['member']} of step {provenance['step']} "
        f"(meta-loss {provenance['meta_loss']:.4g}) to {out}")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli(FLAGS.run_dir, FLAGS.out, FLAGS.member)


if __name__ == "__main__":
  define_flags()
  app.run(main)
