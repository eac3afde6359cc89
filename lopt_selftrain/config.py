"""Gin wiring for the apps: what is configurable, parsing, start-up errors.

Importing this module registers every configurable a gin file may name: ours
(trainer, self-update, PBT, evaluation, tasks, NominalMLPLOpt) and lo's
(learned optimizers, hand-designed optimizers, truncation schedules, task
families).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import gin  # noqa: I001
from gin import config_parser
from learned_optimization.learned_optimizers import (
  adafac_mlp_lopt,  # noqa: F401
  mlp_lopt,  # noqa: F401
  nn_adam,  # noqa: F401
  rnn_mlp_lopt,  # noqa: F401
)
from learned_optimization.learned_optimizers import base as lopt_base  # noqa: F401
from learned_optimization.optimizers import base as opt_base  # noqa: F401
from learned_optimization.outer_trainers import (
  full_es,  # noqa: F401
  truncated_es,  # noqa: F401
  truncated_pes,  # noqa: F401
  truncation_schedule,  # noqa: F401
)

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import (  # noqa: F401
  checkpoint,
  compat,
  evaluation,
  files,
  nominal_lopt,
  pbt,
  population,
  rounds,
  self_update,
  tasks,
)

compat.import_optional_lo_modules()  # configurables of some lo versions only


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Bookkeeping of a run.

  Attributes:
    checkpoint_interval: meta steps between checkpoints (rounded up to an
      evaluation round so a resume never repeats one).
    keep_checkpoints: newest checkpoints kept on disk.
  """
  checkpoint_interval: int = 100
  keep_checkpoints: int = 3

  def __post_init__(self):
    if self.checkpoint_interval < 1 or self.keep_checkpoints < 1:
      raise ValueError("RunConfig.checkpoint_interval and keep_checkpoints must "
                       f"be >= 1, got {self.checkpoint_interval}, "
                       f"{self.keep_checkpoints}")


OPERATIVE_CONFIG = "operative_config.gin"
# Bindings renamed since run dirs were written (old -> new; docs/metrics.md).
# Saved configs are read through `upgrade_saved`, so old runs resume and export.
RENAMED = {"PopulationTrainer.num_outer_steps": "PopulationTrainer.num_meta_steps"}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(config_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files then bindings (replacing any earlier config); a missing
  file is a clear error.

  `include 'gin_configs/...'` lines resolve from the working directory or,
  failing that, from the repository root.
  """
  for path in config_files:
    if not files.exists(path):
      raise FileNotFoundError(f"gin config {path} does not exist")
  gin.clear_config()  # parsing replaces any previous (locked) config
  gin.add_config_file_search_path(REPO_ROOT)
  gin.parse_config_files_and_bindings(list(config_files), list(bindings))


def upgrade_saved(text: str) -> str:
  """A saved gin config with every `RENAMED` binding under its new name."""
  for old, new in RENAMED.items():
    text = re.sub(rf"^{re.escape(old)}\b", new, text, flags=re.MULTILINE)
  return text


def check_writable(log_dir: str) -> None:
  """Creates `log_dir` and proves a file can be written there, before training."""
  probe = f"{log_dir.rstrip('/')}/.write_probe_{uuid.uuid4().hex}"
  try:
    files.makedirs(log_dir)
    with files.open(probe, "w") as f:
      f.write("ok")
    files.remove(probe)
  except OSError as e:
    raise PermissionError(
        f"--train_log_dir={log_dir} is not writable ({_first_line(e)})") from e


def write_operative_config(log_dir: str, text: str | None = None,
                           name: str = OPERATIVE_CONFIG) -> None:
  """Saves a gin config the run used (`text`; default: gin's operative config
  now), next to its outputs."""
  text = gin.operative_config_str() if text is None else text
  files.write_atomic(f"{log_dir.rstrip('/')}/{name}", text.encode())


def _value_text(value: Any) -> str:
  """Canonical text of a parsed gin value (references by name)."""
  if isinstance(value, list | tuple):
    inner = ", ".join(_value_text(v) for v in value)
    return f"[{inner}]" if isinstance(value, list) else f"({inner})"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{_value_text(k)}: {_value_text(v)}"
                           for k, v in value.items()) + "}"
  if hasattr(value, "selector") and hasattr(value, "evaluate"):
    name = getattr(value, "scoped_selector", value.selector)
    return f"@{name}{'()' if value.evaluate else ''}"
  return repr(value)


def bindings(text: str) -> dict[str, str]:
  """{'scope/Configurable.parameter': value text} of a gin config text, read
  by gin's own parser (so line breaks and comments do not matter); imports
  and includes are not followed."""
  delegate = gin.config.ParserDelegate(skip_unknown=True)
  found = {}
  for statement in config_parser.ConfigParser(text, delegate):
    if isinstance(statement, config_parser.BindingStatement):
      name = "/".join(x for x in (statement.scope, statement.selector) if x)
      if statement.arg_name:
        name = f"{name}.{statement.arg_name}"
      found[name] = _value_text(statement.value)
  return found


def changed_bindings(old: str, new: str) -> dict[str, tuple[str | None,
                                                            str | None]]:
  """{binding: (old value, new value)} where two gin config texts differ
  (None: not bound in that text)."""
  a, b = bindings(old), bindings(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
          if a.get(k) != b.get(k)}


def describe_changes(changes: dict[str, tuple[str | None, str | None]]
                     ) -> str:
  """'A.x: 1 -> 2; B.y: (unset) -> 3' for `changed_bindings`."""
  return "; ".join(f"{k}: {'(unset)' if a is None else a} -> "
                   f"{'(unset)' if b is None else b}"
                   for k, (a, b) in changes.items())


class RunDirError(ValueError):
  """A run dir whose history this run cannot continue as asked (nothing in
  it was changed)."""


# Start-up errors of the apps that are the user's to fix (bad flags, config
# values, gin files and bindings, missing or unwritable files, a checkpoint of
# another config): one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, SyntaxError, FileNotFoundError, PermissionError,
               NotADirectoryError)
# gin raises RuntimeError for a required binding left out (and for bugs).
_GIN_USER_RUNTIME_ERRORS = ("Required bindings for",)
# Errors of a running meta-training that are the user's to fix.
RUN_ERRORS = (checkpoint.IncompatibleCheckpointError, RunDirError,
              rounds.DeadPopulationError)


def is_user_error(error: BaseException) -> bool:
  """Whether `error`, raised at an app's start-up, is bad input (see above)."""
  return isinstance(error, USER_ERRORS + RUN_ERRORS) or (
      isinstance(error, RuntimeError)
      and str(error).startswith(_GIN_USER_RUNTIME_ERRORS))


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
  """Turns a user error raised inside into `exit_with_error`; any other
  exception propagates with its traceback."""
  try:
    yield
  except Exception as e:  # noqa: BLE001  -- re-raised unless a user error.
    if not is_user_error(e):
      raise
    exit_with_error(e)


def _first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0].strip()


def exit_with_error(error: BaseException) -> NoReturn:
  """One line on stderr naming the problem, exit status 2."""
  print(f"error: {_first_line(error)}", file=sys.stderr)
  sys.exit(2)
