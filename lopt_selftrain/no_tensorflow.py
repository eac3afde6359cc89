"""Stand-ins for TensorFlow where it is not installed.

Why: lo imports TensorFlow at module level (`summary.py`, which every learned
optimizer imports, and `tasks/datasets/base.py`; `flax.metrics.tensorboard`
through them), but loading and using a learned optimizer, lo's learners, the
population step and the in-memory datasets (MNIST-1D, scikit-learn, quadratics)
never call it. Accelerator images carry no TensorFlow (1.8 GB).

Two scopes:
  - `import_lo_without_tensorflow` (run by `import lopt_selftrain` when
    TensorFlow is missing): imports those lo modules with the stand-ins, then
    removes them again, so `lopt_selftrain.load_optax` works and any other
    `import tensorflow` in the process still fails as it should;
  - `install` (launch/no_tensorflow.py, for the apps): stand-ins for the whole
    process, so the apps' TensorBoard summaries become no-ops.

What the stand-ins do:
  - `tf.io.gfile` / `tf.errors`: local files through `os` (a `gs://` path is an
    error);
  - `tf.summary`: no-ops, so no TensorBoard event files are written
    (`metrics.jsonl` still is);
  - `tf.compat.v2.enable_v2_behavior`: a no-op, as on TensorFlow 2;
  - anything else is a placeholder that raises when called, naming itself, so
    no result can silently depend on TensorFlow.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import os
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
                       "(lopt_selftrain.no_tensorflow stands in for it)")


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


def tensorflow_missing() -> bool:
  """Whether TensorFlow cannot be imported here (or `HIDE_ENV`=1: a machine
  with TensorFlow then runs as a GPU image without it, e.g. in tests)."""
  if os.environ.get(HIDE_ENV) == "1":
    return True
  try:
    return importlib.util.find_spec("tensorflow") is None
  except (ImportError, ValueError):  # a blocked or half-imported module
    return True


def install() -> bool:
  """Puts the stand-ins first on `sys.meta_path` for the rest of the process,
  only if `tensorflow_missing()`.

  Returns:
    Whether they were installed (False: TensorFlow is there and used as is).
  """
  if not tensorflow_missing():
    return False
  if not any(isinstance(f, StandInFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, StandInFinder())
  return True


# lo's modules that import TensorFlow at module level and that this package
# reaches (the others, e.g. lo's language datasets, keep failing without it).
LO_MODULES = ("learned_optimization.summary",
              "learned_optimization.filesystem",  # lo HEAD
              "learned_optimization.tasks.datasets.base")


def import_lo_without_tensorflow() -> None:
  """Imports `LO_MODULES` with the stand-ins, then takes the stand-ins out of
  `sys.modules` and `sys.meta_path` again. No-op if they are installed for
  the process or TensorFlow is there."""
  if (not tensorflow_missing()
      or any(isinstance(f, StandInFinder) for f in sys.meta_path)):
    return
  finder = StandInFinder()
  sys.meta_path.insert(0, finder)
  try:
    for name in LO_MODULES:
      if importlib.util.find_spec(name.rpartition(".")[0]) and (
          importlib.util.find_spec(name)):
        importlib.import_module(name)
  finally:
    sys.meta_path.remove(finder)
    for name in [m for m in sys.modules
                 if isinstance(sys.modules[m], _StandInModule)]:
      del sys.modules[name]
