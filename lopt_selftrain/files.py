"""File I/O of the package: local paths and URLs, atomic writes, checksummed files.

Why one module: checkpoints, exported optimizers, metrics logs and data caches
all need the same three things. Runs live on preemptible machines, so a file is
replaced atomically (written under a temp name, then renamed: a crash leaves the
old file or the new one, never half of one). Files that must be trusted carry a
checksum (`Envelope`), so a damaged one is refused with one error type. And a
path may be local or a URL such as `gs://bucket/run`: local paths use plain
Python; URLs (anything with "://") go through `tf.io.gfile`, imported only when
a URL is used, so local use never imports TensorFlow.

Errors are the built-in ones for both kinds of path: a missing file raises
`FileNotFoundError`, other I/O failures `OSError` (gfile's `tf.errors` are
translated).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

_SHA256_BYTES = 32


def is_url(path: str) -> bool:
  """True for `gs://...` and other URLs, which go through `tf.io.gfile`."""
  return "://" in path


def _tf() -> Any:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (URLs only)
  return tf


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
  """Raises gfile's `tf.errors` as the OSError that local I/O would raise."""
  if not is_url(path):
    yield
    return
  errors = _tf().errors
  try:
    yield
  except errors.NotFoundError as e:
    raise FileNotFoundError(f"{path}: {getattr(e, 'message', e)}") from e
  except errors.OpError as e:
    raise OSError(f"{path}: {getattr(e, 'message', e)}") from e


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  with _os_errors(path):
    return _tf().io.gfile.exists(path)


def isdir(path: str) -> bool:
  if not is_url(path):
    return os.path.isdir(path)
  with _os_errors(path):
    return _tf().io.gfile.isdir(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents; an existing directory is fine."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    return
  with _os_errors(path):
    _tf().io.gfile.makedirs(path)


def listdir(path: str) -> list[str]:
  """Entry names of a directory (gfile may end subdirectory names with "/")."""
  if not is_url(path):
    return os.listdir(path)
  with _os_errors(path):
    return _tf().io.gfile.listdir(path)


def remove(path: str) -> None:
  """Deletes a file; FileNotFoundError if it is not there."""
  if not is_url(path):
    os.remove(path)
    return
  with _os_errors(path):
    _tf().io.gfile.remove(path)


def rename(src: str, dst: str) -> None:
  """Moves `src` to `dst`, replacing `dst` (atomic for local paths)."""
  if is_url(src) != is_url(dst):
    raise ValueError(f"cannot rename {src} to {dst}: one is a URL, one is not")
  if not is_url(src):
    os.replace(src, dst)
    return
  with _os_errors(src):
    _tf().io.gfile.rename(src, dst, overwrite=True)


@contextlib.contextmanager
def open(path: str, mode: str = "r") -> Iterator[IO[Any]]:  # noqa: A001
  """Context manager over an open file, like `builtins.open` (modes r/w/a[b])."""
  if not is_url(path):
    with builtins.open(path, mode) as f:
      yield f
    return
  with _os_errors(path), _tf().io.gfile.GFile(path, mode) as f:
    yield f


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def write_atomic(path: str, data: bytes | Callable[[IO[bytes]], None]) -> None:
  """Replaces `path` by `data` so readers (and crashes) see the old or new file.

  The content goes to a temp file next to `path`, which is flushed to disk
  (local paths) and renamed over `path`. An exception removes the temp file; a
  killed process may leave it behind, named `<path>.tmp-<hex>`, which readers of
  `path` never see. The directory must exist.

  Args:
    path: destination, local or URL.
    data: the bytes, or a function writing them to a binary file (for content
      too large to hold twice, e.g. `np.savez` or a checkpoint's arrays).
  """
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with open(tmp, "wb") as f:
      if callable(data):
        data(f)
      else:
        f.write(data)
      if not is_url(tmp):
        f.flush()
        os.fsync(f.fileno())  # The rename must not land before the bytes do.
    rename(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      remove(tmp)
    raise


class CorruptFileError(ValueError):
  """A file is not an intact envelope: wrong kind or version, cut short, damaged."""


@dataclasses.dataclass(frozen=True)
class Envelope:
  """A checksummed file format: `magic`, payload, sha256 of magic and payload.

  Attributes:
    magic: 8 bytes naming the format and its version, e.g. b"LOPTEX01".
    what: the format in words, for error messages ("an exported optimizer").
  """
  magic: bytes
  what: str

  def __post_init__(self):
    if len(self.magic) != 8:
      raise ValueError(f"magic must be 8 bytes, got {self.magic!r}")

  def write(self, path: str, payload: Iterable[bytes]) -> None:
    """Atomically writes the envelope, streaming the payload's pieces."""
    def write_pieces(f: IO[bytes]) -> None:
      digest = hashlib.sha256(self.magic)
      f.write(self.magic)
      for piece in payload:
        digest.update(piece)
        f.write(piece)
      f.write(digest.digest())
    write_atomic(path, write_pieces)

  def read(self, path: str) -> memoryview:
    """The payload of an intact file.

    Raises:
      FileNotFoundError: `path` does not exist.
      CorruptFileError: another format or version, cut short, or damaged.
    """
    data = memoryview(read_bytes(path))
    head = bytes(data[:len(self.magic)])
    if head != self.magic:
      raise CorruptFileError(f"{path} is not {self.what} (starts with {head!r}, "
                             f"not {self.magic!r})")
    if len(data) < len(self.magic) + _SHA256_BYTES:
      raise CorruptFileError(f"{path} is cut short ({len(data)} bytes)")
    body, digest = data[:-_SHA256_BYTES], data[-_SHA256_BYTES:]
    if hashlib.sha256(body).digest() != digest:
      raise CorruptFileError(f"{path} is corrupt (sha256 mismatch)")
    return body[len(self.magic):]
