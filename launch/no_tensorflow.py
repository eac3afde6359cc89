"""Runs a lopt_selftrain app on a machine where TensorFlow cannot be installed.

Why: lo (`summary.py`, `tasks/datasets/base.py`), `flax.metrics.tensorboard`, the
train app (TensorBoard summaries) and TFDS tasks import `tensorflow` /
`tensorflow_datasets` at module level (our own I/O, `lopt_selftrain.files`, needs
TensorFlow only for gs:// paths), but the population step, lo's learners and the in-memory datasets (MNIST-1D, quadratics)
never use them. Accelerator machines that can carry only a few MB of wheels (not
TensorFlow's 1.8 GB) can then still run the trainer, compare and the benchmark.

Where TensorFlow is installed the runner changes nothing. Where it is not, it
puts stand-in modules for TensorFlow, TFDS and `flax.metrics.tensorboard` (which
cannot import without TensorFlow) first on `sys.meta_path`:
  - `tf.io.gfile` / `tf.errors`: local files through `os` (a `gs://` path is an
    error);
  - `tf.summary`: no-ops, so no TensorBoard event files are written
    (`metrics.jsonl` still is);
  - `tf.compat.v2.enable_v2_behavior`: a no-op, as on TensorFlow 2;
  - anything else is a placeholder that raises when called, naming itself, so
    no result can silently depend on TensorFlow.

  python launch/no_tensorflow.py lopt_selftrain.benchmark --gin_config=...
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Iterator
from typing import Any, NoReturn

STAND_INS = ("tensorflow", "tensorflow_datasets", "flax.metrics.tensorboard")
HIDE_ENV = "LOPT_HIDE_TENSORFLOW"


def _local(path: str) -> str:
  if "://" in path:
    raise ValueError(f"{path}: only local paths work without TensorFlow")
  return path


def _rename(src: str, dst: str, overwrite: bool = False) -> None:
  if not overwrite and os.path.exists(_local(dst)):
    raise FileExistsError(dst)
  os.replace(_local(src), _local(dst))


class _NullWriter:
  """`tf.summary` file writer that writes nothing."""

  @contextlib.contextmanager
  def as_default(self, step: int | None = None) -> Iterator[None]:
    del step
    yield

  def flush(self) -> None:
    pass


IMPLEMENTED: dict[str, Any] = {
    "tensorflow.io.gfile.GFile": lambda path, mode="r": open(_local(path), mode),
    "tensorflow.io.gfile.exists": lambda path: os.path.exists(_local(path)),
    "tensorflow.io.gfile.isdir": lambda path: os.path.isdir(_local(path)),
    "tensorflow.io.gfile.listdir": lambda path: os.listdir(_local(path)),
    "tensorflow.io.gfile.glob": lambda pattern: glob.glob(_local(pattern)),
    "tensorflow.io.gfile.makedirs": (
        lambda path: os.makedirs(_local(path), exist_ok=True)),
    "tensorflow.io.gfile.remove": lambda path: os.remove(_local(path)),
    "tensorflow.io.gfile.rename": _rename,
    "tensorflow.errors.NotFoundError": FileNotFoundError,
    "tensorflow.errors.OpError": OSError,
    "tensorflow.summary.create_file_writer": lambda *a, **k: _NullWriter(),
    "tensorflow.summary.scalar": lambda *a, **k: None,
    "tensorflow.compat.v2.enable_v2_behavior": lambda: None,
}


def _resolve(path: str) -> Any:
  return IMPLEMENTED.get(path) or Placeholder(path)


class Placeholder:
  """Stands for `path` in a missing module; attribute access nests, calls raise."""

  def __init__(self, path: str):
    self._path = path

  def __getattr__(self, name: str) -> Any:
    if name.startswith("__"):
      raise AttributeError(name)
    return _resolve(f"{self._path}.{name}")

  def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError(f"{self._path} was called, but TensorFlow is not installed "
                       "(launch/no_tensorflow.py stands in for it)")


class _StandInModule(types.ModuleType):

  def __getattr__(self, name: str) -> Any:
    if name.startswith("__"):
      raise AttributeError(name)
    return _resolve(f"{self.__name__}.{name}")


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds `STAND_INS` and their submodules."""

  def find_spec(self, fullname: str, path: Any = None, target: Any = None
                ) -> importlib.machinery.ModuleSpec | None:
    del path, target
    if not any(fullname == s or fullname.startswith(s + ".") for s in STAND_INS):
      return None
    return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

  def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    module = _StandInModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module: types.ModuleType) -> None:
    del module


def install() -> bool:
  """Puts the stand-ins first on `sys.meta_path`, only if TensorFlow is missing
  (or `HIDE_ENV`=1: a CPU machine with TensorFlow then runs as a GPU image
  without it, e.g. tests/test_gpu_run.py).

  Returns:
    Whether they were installed (False: TensorFlow is there and used as is).
  """
  if (os.environ.get(HIDE_ENV) != "1"
      and importlib.util.find_spec("tensorflow") is not None):
    return False
  if not any(isinstance(f, StandInFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, StandInFinder())
  return True


def main() -> None:
  if len(sys.argv) < 2:
    sys.exit("usage: python launch/no_tensorflow.py MODULE [ARGS...]")
  install()
  module = sys.argv[1]
  sys.argv = [module] + sys.argv[2:]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
