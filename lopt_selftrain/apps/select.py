r"""Export the member of one or more runs that does best on the validation suite.

  python -m lopt_selftrain.apps.select --run_dirs=runs/a,runs/b --out=best.lopt \
      --out_dir=DIR [--tasks=val_tabgen_wide,...] [--steps_scale=0.1] \
      [--seeds=0,1]  (the default: two draws)

Every member of each run's latest checkpoint trains every task of
`lopt_selftrain.tasks.heldout.VALIDATION` next to Adam tuned over a learning
rate grid (`lopt_selftrain.selection`), once per seed in --seeds (each a
draw of inits and keys, counted like a task of its own); the member with the
fewest tasks beyond 2x tuned Adam's final loss, then the lowest median ratio,
is exported to --out, its provenance naming the choice. A run dir may also
be a directory of member files (`apps.export --all_members`).
Writes DIR/validation.json (per task: tuned Adam and every member's ratio) and
DIR/validation.md (the table). The held-out suite is never run here: it
stays the test set (`lopt_selftrain.apps.evaluate --suite=heldout`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import config, files, heldout, members, selection
from lopt_selftrain.tasks import heldout as heldout_tasks

FLAGS = flags.FLAGS


def cli(run_dirs: Sequence[str], out: str | None, out_dir: str | None,
        task_names: Sequence[str] = (), steps_scale: float = 1.0,
        seeds: Sequence[int | str] = (0, 1), adam_lrs: Sequence[str] = ()
        ) -> None:
  """The app minus flag parsing: the table and the choice, or `error: ...`."""
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if not run_dirs or not out or not out_dir:
      raise ValueError("--run_dirs, --out and --out_dir are required")
    specs = heldout_tasks.suite_tasks(task_names, suite="validation")
    lrs = [float(lr) for lr in adam_lrs] or list(heldout.ADAM_LRS)
    seeds = [int(s) for s in seeds]
    populations = [members.load_population(d) for d in run_dirs]
    records = selection.validation_records(populations, specs, steps_scale,
                                           seeds, lrs)
    chosen = selection.choose(records)
    text = selection.markdown(populations, records, chosen)
    out_dir = out_dir.rstrip("/")
    files.makedirs(out_dir)
    files.write_atomic(f"{out_dir}/validation.json", json.dumps(
        {"runs": [p.run_dir for p in populations], "tasks": records,
         "chosen": {"run": chosen[0], "member": chosen[1]}},
        indent=1).encode())
    files.write_atomic(f"{out_dir}/validation.md", text.encode())
    misses, median, geo = selection.scores(records)[chosen[0]][chosen[1]]
    provenance = members.export_member(
        populations[chosen[0]], chosen[1], out,
        selected_by=(f"validation suite: {misses:g} task(s) beyond "
                     f"{selection.WITHIN:g}x tuned Adam, median ratio "
                     f"{median:.4g} (geometric mean {geo:.4g}) over "
                     f"{', '.join(selection.record_name(r, records) for r in records)}"))
  print(text)
  print(f"exported member {provenance['member']} of {provenance['run_dir']} "
        f"(step {provenance['step']}) to {out}")


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_list("run_dirs", [], "Training run directories (--train_log_dir).")
  flags.DEFINE_string("out", None, "Exported optimizer file to write.")
  flags.DEFINE_string("out_dir", None, "Where validation.json/.md go.")
  flags.DEFINE_list("tasks", [], "Validation tasks to run (default: all of "
                    "lopt_selftrain.tasks.heldout.VALIDATION).")
  flags.DEFINE_float("steps_scale", 1.0, "Multiplies every task's step count.")
  flags.DEFINE_list("seeds", ["0", "1"], "One draw of inits and per-step "
                    "keys per seed; each draw of a task counts like a task.")
  flags.DEFINE_list("adam_lrs", [f"{lr:g}" for lr in heldout.ADAM_LRS],
                    "Adam learning rates to compare against.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli(FLAGS.run_dirs, FLAGS.out, FLAGS.out_dir, FLAGS.tasks, FLAGS.steps_scale,
      FLAGS.seeds, FLAGS.adam_lrs)


if __name__ == "__main__":
  define_flags()
  app.run(main)
