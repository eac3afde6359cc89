"""A training run's directory: what a rerun continues, and what it never loses.

A run dir holds `metrics.jsonl`, `checkpoints/`, the gin config the run started
with (`operative_config.gin`) and TensorBoard events. Rerunning the same command
resumes from the newest intact checkpoint. Everything else is refused with
`config.RunDirError`, before anything in the dir is touched:

- history (metrics records or checkpoint files) of which no checkpoint
  restores: a fresh start would write over it. `restart=True` first moves the
  old run aside into `previous_runs/<UTC time>/`; nothing is ever deleted.
- a gin config other than the run's: the resumed run would quietly be another
  experiment. Extending `PopulationTrainer.num_meta_steps` is allowed;
  `allow_config_change=True` allows any change. An accepted change is saved as
  `operative_config.resumed_at_<step>.gin` (the original stays as it was),
  logged, and returned for the next metrics record.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

import jax

from lopt_selftrain import checkpoint, config, files

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
PREVIOUS_RUNS = "previous_runs"
# Bindings a rerun may grow without asking: a longer run of the same experiment.
EXTENDABLE = ("PopulationTrainer.num_meta_steps",)
_RESUMED_CONFIG = re.compile(r"^operative_config\.resumed_at_(\d+)\.gin$")


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a run starts.

  Attributes:
    restored: (step, tree, metadata) of the checkpoint resumed, or None for a
      fresh start.
    config_change: the accepted config change of a resume, for the metrics
      ({"resumed_at", "bindings", "file"}), or None.
  """
  restored: tuple[int, Any, dict[str, Any]] | None
  config_change: dict[str, Any] | None = None


def _join(log_dir: str, *names: str) -> str:
  return "/".join((log_dir.rstrip("/"),) + names)


def start(log_dir: str, target: Any, config_text: str | None = None, *,
          restart: bool = False, allow_config_change: bool = False) -> Start:
  """Resolves what a run in `log_dir` continues from (see the module doc).

  Args:
    log_dir: the run dir (local or gs://); need not exist.
    target: the checkpoint tree of a fresh population (structure only).
    config_text: gin's operative config of this run; None skips saving and
      comparing configs (e.g. a caller that claims its dirs itself).
    restart: move an existing run aside and start fresh.
    allow_config_change: resume under a config other than the run's.

  Raises:
    config.RunDirError: history without a restorable checkpoint, or another
      config (nothing was changed).
    checkpoint.IncompatibleCheckpointError: the newest intact checkpoint has
      another shape than `target` (nothing was changed).
  """
  chief = jax.process_index() == 0
  if restart:
    if chief:
      move_aside(log_dir)
    found = None
  else:
    found = checkpoint.restore_latest(_join(log_dir, CHECKPOINTS), target)
    if found is None:
      _refuse_lost_history(log_dir)
  if found is None:
    if chief:
      files.makedirs(log_dir)
      if config_text is not None:
        config.write_operative_config(log_dir, config_text)
    return Start(None)
  step = found[0]
  change = None
  if config_text is not None:
    change = _check_config(log_dir, step, config_text, allow_config_change)
  if chief:
    checkpoint.JsonlLog(_join(log_dir, METRICS)).truncate_after(step)
  return Start(found, change)


def _refuse_lost_history(log_dir: str) -> None:
  """Raises if `log_dir` holds history that a fresh start would overwrite."""
  ckpt_dir = _join(log_dir, CHECKPOINTS)
  files = [checkpoint.checkpoint_path(ckpt_dir, s)
           for s in checkpoint.list_steps(ckpt_dir)]
  records = checkpoint.read(_join(log_dir, METRICS))
  if not files and not records:
    return
  held = []
  if files:
    held.append(f"checkpoint(s) {', '.join(files)}, none of which restores "
                "(see the warnings above)")
  if records:
    held.append(f"{len(records)} metrics record(s) in "
                f"{_join(log_dir, METRICS)}")
  raise config.RunDirError(
      f"{log_dir} holds {' and '.join(held)}; nothing was changed: repair or "
      f"copy back the checkpoints to resume, or rerun with --restart to move "
      f"the old run to {_join(log_dir, PREVIOUS_RUNS)}/ and start over")


def move_aside(log_dir: str) -> str | None:
  """Moves everything in `log_dir` (but earlier moved runs) into
  `previous_runs/<UTC time>/` and returns that dir (None: nothing to move)."""
  if not files.isdir(log_dir):
    return None
  entries = [e.rstrip("/") for e in files.listdir(log_dir)
             if e.rstrip("/") != PREVIOUS_RUNS]
  if not entries:
    return None
  dest = _join(log_dir, PREVIOUS_RUNS, time.strftime("%Y%m%dT%H%M%SZ",
                                                      time.gmtime()))
  for entry in entries:
    _move(_join(log_dir, entry), _join(dest, entry))
  logging.warning("--restart: moved the previous run of %s to %s.", log_dir,
                  dest)
  return dest


def _move(src: str, dst: str) -> None:
  """Renames a file or a local directory; a URL directory (gs:// has no
  directory rename, and a prefix without objects is gone) file by file."""
  if files.is_url(src) and files.isdir(src):
    for name in files.listdir(src):
      _move(f"{src}/{name.rstrip('/')}", f"{dst}/{name.rstrip('/')}")
    return
  files.makedirs(dst.rsplit("/", 1)[0])
  files.rename(src, dst)


def saved_config(log_dir: str, step: int) -> tuple[str, str] | None:
  """(file name, text) of the config that made checkpoint `step`: the newest
  accepted change at or before `step`, else the config the run started with
  (renamed bindings under their new names)."""
  names = [n.rstrip("/") for n in files.listdir(log_dir)]
  changes = sorted((int(m.group(1)), n) for n in names
                   if (m := _RESUMED_CONFIG.match(n)) and int(m.group(1)) <= step)
  name = changes[-1][1] if changes else config.OPERATIVE_CONFIG
  if name not in names:
    return None
  return name, config.upgrade_saved(
      files.read_bytes(_join(log_dir, name)).decode())


def _check_config(log_dir: str, step: int, config_text: str,
                  allow_config_change: bool) -> dict[str, Any] | None:
  """The accepted change of a resume at `step` (None: same config); raises
  config.RunDirError for a change not allowed."""
  saved = saved_config(log_dir, step)
  if saved is None:  # a run dir of an older version, or written in-process
    if jax.process_index() == 0:
      config.write_operative_config(log_dir, config_text)
    return None
  name, text = saved
  changes = config.changed_bindings(text, config_text)
  if not changes:
    return None
  if not allow_config_change:
    refused = {k: v for k, v in changes.items() if not _extends(k, *v)}
    if refused:
      raise config.RunDirError(
          f"{log_dir} holds a run of another gin config than this one "
          f"({name}): {config.describe_changes(refused)}; nothing was "
          "changed: rerun with the run's config, or pass "
          "--allow_config_change to resume under this one (recorded), or "
          "--restart to start over")
  file = f"operative_config.resumed_at_{step:09d}.gin"
  logging.warning("Resuming %s at step %d under a changed config (saved as "
                  "%s): %s", log_dir, step, file,
                  config.describe_changes(changes))
  if jax.process_index() == 0:
    config.write_operative_config(log_dir, config_text, file)
  return {"resumed_at": step, "file": file,
          "bindings": {k: list(v) for k, v in changes.items()}}


def _extends(binding: str, old: str | None, new: str | None) -> bool:
  """Whether a change of `binding` only makes the run longer."""
  if binding not in EXTENDABLE or old is None or new is None:
    return False
  try:
    return int(new) >= int(old)
  except ValueError:
    return False
