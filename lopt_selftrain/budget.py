"""Phases under one time budget, each with its own deadline, always leaving
results on disk.

A lent accelerator runs one command for a fixed number of seconds, and the
results of a half-finished run are worth keeping. So a budgeted run is a list
of phases, each run as its own process with a share of the time still left:
a phase stops starting work it cannot finish (`Deadline`), writes what it has
after every measurement (`write_json`, atomic), and the runner kills it at its
deadline if it overruns (a compilation cannot be interrupted). The runner
records every phase's status in status.json and calls back after each change
so a summary can be rewritten. A phase marked done is skipped on a rerun with
the same output directory; the others start again (and resume from their own
checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from lopt_selftrain import files

STATUS = "status.json"


class Deadline:
  """A point in time, `seconds` from construction."""

  def __init__(self, seconds: float):
    self.end = time.monotonic() + seconds

  def left(self) -> float:
    return self.end - time.monotonic()

  def allows(self, seconds: float | None) -> bool:
    """Whether work predicted to take `seconds` fits (None: no prediction
    yet, so try)."""
    return seconds is None or seconds <= self.left()


def _plain(value: Any) -> Any:
  """Strict JSON: numpy scalars become floats, non-finite floats null."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, obj: Any) -> None:
  """Writes strict JSON to a local file atomically: a reader (or a kill) never
  leaves half a file."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  files.write_atomic(path, json.dumps(_plain(obj), indent=1).encode())


def read_json(path: str, default: Any = None) -> Any:
  """The JSON at `path`, or `default` if there is none."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


class _Stopped(Exception):
  """SIGTERM arrived (an outer timeout): stop the phase and write results."""


def _raise_stopped(signum: int, frame: Any) -> None:
  del signum, frame
  raise _Stopped


def run_phases(out_dir: str, phases: Sequence[tuple[str, float, list[str]]],
               budget_s: float, on_change: Callable[[], None],
               reserve_s: float = 5.0) -> dict[str, Any]:
  """Runs each (name, share, argv) phase as a process, in order.

  A phase gets `share / (shares of it and the phases after it)` of the time
  left minus `reserve_s`, so time a phase does not use goes to the later ones;
  `--phase_seconds=S` is appended to its argv and it is killed after S
  seconds. Returns the status record (also in out_dir/status.json).
  """
  start = time.monotonic()
  path = os.path.join(out_dir, STATUS)
  status = read_json(path, {})
  status.update(budget_s=budget_s, started=time.strftime(
      "%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
  records = status.setdefault("phases", {})
  for name, _, _ in phases:
    if records.get(name, {}).get("status") != "done":
      records[name] = {"status": "pending"}
  write_json(path, status)
  on_change()
  previous = signal.signal(signal.SIGTERM, _raise_stopped)
  try:
    for i, (name, share, argv) in enumerate(phases):
      if records[name]["status"] == "done":
        continue
      shares = sum(s for _, s, _ in phases[i:])
      seconds = max(0.0, (budget_s - reserve_s - (time.monotonic() - start))
                    * share / shares)
      record = records[name] = {"status": "running",
                                "deadline_s": round(seconds, 1)}
      write_json(path, status)
      on_change()
      record.update(_run_phase(argv + [f"--phase_seconds={seconds:.1f}"],
                               seconds, os.path.join(out_dir, "logs",
                                                     f"{name}.log")))
      write_json(path, status)
      on_change()
  except _Stopped:
    for record in records.values():
      if record["status"] in ("running", "pending"):
        record["status"] = "stopped: budget ended (SIGTERM)"
    write_json(path, status)
    on_change()
  finally:
    signal.signal(signal.SIGTERM, previous)
  return status


def _run_phase(argv: list[str], seconds: float, log: str) -> dict[str, Any]:
  """Runs one phase process; its status, exit code and wall time."""
  os.makedirs(os.path.dirname(log), exist_ok=True)
  start = time.monotonic()
  with open(log, "w") as out:
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
      rc = proc.wait(timeout=max(seconds, 1.0))
      state = "done" if rc == 0 else f"error (exit {rc}, see logs)"
    except (subprocess.TimeoutExpired, _Stopped) as e:
      proc.kill()
      rc = proc.wait()
      if isinstance(e, _Stopped):
        raise
      state = "stopped: phase deadline"
  return {"status": state, "exit_code": rc,
          "seconds": round(time.monotonic() - start, 1)}
