r"""Adds an exported optimizer to the shipped ones, with its provenance.

  python -m lopt_selftrain.apps.ship --exported=best.lopt --name=NAME \
      --config=gin_configs/selftrain_broad_cpu.gin --device="2-core CPU, no GPU"

Copies the file into this package as NAME.lopt with `config`, `device` and
`date` added to the provenance stored in it (run_dir, step, member and
meta_loss come from `lopt_selftrain.apps.export`), and writes the same provenance
as NAME.json next to it, so it can be read without loading the weights. Add
NAME to `PRETRAINED` (best first) by hand: which optimizer is best is a
judgement made on the held-out suite, not by this tool.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
from absl import app, flags

from lopt_selftrain import config, export, pretrained

FLAGS = flags.FLAGS


def ship(exported: str, name: str, config_path: str, device: str,
         date: str | None = None, directory: str | None = None
         ) -> dict[str, Any]:
  """Writes DIR/NAME.lopt and DIR/NAME.json; returns the provenance."""
  if not name.isidentifier():
    raise ValueError(f"--name must be a Python identifier, got {name!r}")
  source = export.read(exported)
  provenance = dict(source.provenance, config=config_path, device=device,
                    date=date or datetime.date.today().isoformat())
  directory = directory or os.path.dirname(pretrained.__file__)
  export.write(os.path.join(directory, f"{name}.lopt"), source.spec,
               source.theta, provenance)
  with open(os.path.join(directory, f"{name}.json"), "w") as f:
    json.dump(provenance, f, indent=1)
  return provenance


def define_flags() -> None:
  """The app's flags (defined only when run, so apps import without clashes)."""
  flags.DEFINE_string("exported", None, "File written by lopt_selftrain.apps.export.")
  flags.DEFINE_string("name", None, "Shipped name (a Python identifier).")
  flags.DEFINE_string("config", None, "gin config of the run it came from.")
  flags.DEFINE_string("device", None, "Machine the run used, in words.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with config.user_errors_exit():  # bad input: one line; bugs: a traceback
    if not (FLAGS.exported and FLAGS.name and FLAGS.config and FLAGS.device):
      raise ValueError("--exported, --name, --config and --device are required")
    provenance = ship(FLAGS.exported, FLAGS.name, FLAGS.config, FLAGS.device)
  print(f"shipped {FLAGS.name} (step {provenance.get('step')}, meta-loss "
        f"{provenance.get('meta_loss')})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
