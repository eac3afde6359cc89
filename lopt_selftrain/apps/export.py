r"""Export one member of a training run as a portable optimizer file.

  python -m lopt_selftrain.apps.export --run_dir=runs/demo --out=lopt.lopt \
      [--member=K]
  python -m lopt_selftrain.apps.export --run_dir=runs/demo --out=DIR \
      --all_members [--steps=all|S1,S2,...]

Without --member the member with the lowest latest meta-loss is exported. Load
the file with `lopt_selftrain.load_optax(path)` (format: `lopt_selftrain.export`).
With --all_members every member of each checkpoint step (default: the latest)
goes to DIR/step_<S>/member_<m>.lopt: kilobytes, where checkpoints hold the
unroll state; `apps.select --run_dirs` reads such a step directory like a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import checkpoint, config, export, members

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_string("run_dir", None, "Training run directory (--train_log_dir).")
  flags.DEFINE_string("out", None, "Exported optimizer file to write.")
  flags.DEFINE_integer("member", None,
                       "Population member to export (default: best meta-loss).")
  flags.DEFINE_bool("all_members", False,
                    "Export every member to OUT/step_<S>/member_<m>.lopt.")
  flags.DEFINE_list("steps", [], "With --all_members: checkpoint steps to "
                    "export, or 'all' (default: the latest).")


def _steps(run_dir: str, steps: Sequence[str]) -> list[int] | None:
  """--steps as checkpoint steps (None: the latest)."""
  if list(steps) == ["all"]:
    return checkpoint.list_steps(f"{run_dir.rstrip('/')}/checkpoints") or None
  try:
    return [int(s) for s in steps] or None
  except ValueError as e:
    raise export.ExportError(f"--steps must be 'all' or whole numbers, got "
                             f"{','.join(steps)}") from e


def cli(run_dir: str | None, out: str | None, member: int | None,
        all_members: bool = False, steps: Sequence[str] = ()) -> None:
  """The app minus flag parsing: a summary line, or `error: ...` and exit 2."""
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if not run_dir or not out:
      raise export.ExportError("--run_dir and --out are required")
    if all_members:
      if member is not None:
        raise export.ExportError("--member and --all_members exclude each other")
      populations = members.load_populations(run_dir, _steps(run_dir, steps))
      for population in populations:
        members.export_population(
            population, f"{out.rstrip('/')}/step_{population.step:09d}")
      print(f"exported {len(populations[0].meta_loss)} members of step(s) "
            f"{', '.join(str(p.step) for p in populations)} to {out}")
      return
    if steps:
      raise export.ExportError("--steps needs --all_members")
    provenance = members.export_run(run_dir, out, member)
  print(f"exported member {provenance['member']} of step {provenance['step']} "
        f"(meta-loss {provenance['meta_loss']:.4g}) to {out}")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli(FLAGS.run_dir, FLAGS.out, FLAGS.member, FLAGS.all_members, FLAGS.steps)


if __name__ == "__main__":
  define_flags()
  app.run(main)
