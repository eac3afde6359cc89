"""Gin wiring for the apps: what is configurable, parsing, start-up errors.

Importing this module registers every configurable a gin file may name: ours
(trainer, self-update, PBT, evaluation, tasks) and lo's (learned optimizers,
hand-designed optimizers, truncation schedules, task families).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from collections.abc import Sequence
from typing import NoReturn

import gin  # noqa: I001
import tensorflow as tf
from learned_optimization.learned_optimizers import base as lopt_base  # noqa: F401
from learned_optimization.learned_optimizers import (
  mlp_lopt,  # noqa: F401
  nn_adam,  # noqa: F401
  rnn_mlp_lopt,  # noqa: F401
)
from learned_optimization.optimizers import base as opt_base  # noqa: F401
from learned_optimization.outer_trainers import (
  full_es,  # noqa: F401
  truncated_es,  # noqa: F401
  truncated_pes,  # noqa: F401
  truncation_schedule,  # noqa: F401
)

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import evaluation, pbt, population, self_update, tasks  # noqa: F401


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Bookkeeping of a run.

  Attributes:
    checkpoint_interval: outer steps between checkpoints (rounded up to an
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
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(config_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files then bindings (replacing any earlier config); a missing
  file is a clear error.

  `include 'gin_configs/...'` lines resolve from the working directory or,
  failing that, from the repository root.
  """
  for path in config_files:
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"gin config {path} does not exist")
  gin.clear_config()  # parsing replaces any previous (locked) config
  gin.add_config_file_search_path(REPO_ROOT)
  gin.parse_config_files_and_bindings(list(config_files), list(bindings))


def check_writable(log_dir: str) -> None:
  """Creates `log_dir` and proves a file can be written there, before training."""
  probe = f"{log_dir.rstrip('/')}/.write_probe_{uuid.uuid4().hex}"
  try:
    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise PermissionError(
        f"--train_log_dir={log_dir} is not writable ({_first_line(e)})") from e


def write_operative_config(log_dir: str) -> None:
  """Saves the gin config the run actually used, next to its outputs."""
  with tf.io.gfile.GFile(f"{log_dir.rstrip('/')}/{OPERATIVE_CONFIG}", "w") as f:
    f.write(gin.operative_config_str())


def _first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0].strip()


def exit_with_error(error: BaseException) -> NoReturn:
  """One line on stderr naming the problem, exit status 2."""
  print(f"error: {_first_line(error)}", file=sys.stderr)
  sys.exit(2)
