"""Preemption-safe checkpoints of a meta-training state, and a resumable metrics log.

Meta-training runs for days on preemptible VMs, so every write here is atomic
(temp file in the same directory, then rename) and every checkpoint carries a
checksum: a file cut short or damaged by a crash is detected and skipped, never
half-restored. All I/O goes through `files`, so a directory may be a local path
or a `gs://` URL.

Checkpoint file format (one file per checkpoint, `ckpt_<step, 9+ digits>.ckpt`)::

  b"LOPTCK01"                     8 bytes, magic and format version (`files.Envelope`)
  header length H                 8 bytes, unsigned little-endian
  header                          H bytes, UTF-8 JSON (see below)
  array data                      raw C-order little-endian bytes of every
                                  array leaf, in leaf order, back to back
  sha256                          32 bytes, digest of everything before it

The JSON header is `{"step": int, "metadata": {...}, "leaves": [...]}` with one
entry per leaf of the state, in `jax.tree_util` flattening order, `None` counting
as a leaf. Each entry has `path` (`jax.tree_util.keystr`) and `kind`: `"array"`
(with `dtype` name, `shape`, `nbytes`), `"none"`, or `"int"`/`"float"`/`"bool"`
(a Python scalar, with `value`). The tree's node types are not stored: restoring
unflattens into the caller's `target`, after checking leaf paths, kinds, shapes
and dtypes agree, so static (non-pytree) dataclass fields come from `target`.

Typical resume loop::

  log = JsonlLog(f"{workdir}/metrics.jsonl")
  found = restore_latest(ckpt_dir, init_state)
  if found is None:
    step, state = 0, init_state
    log.truncate_after(-1)  # Drop what a run killed before its first save logged.
  else:
    step, state, meta = found
    log.truncate_after(step)
  ...
  save(ckpt_dir, step, state, {"lineage": lineage, "gin": gin_text})
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from lopt_selftrain import files, sharding

_ENVELOPE = files.Envelope(b"LOPTCK01", "a checkpoint")
_LEN = struct.Struct("<Q")
_NAME_RE = re.compile(r"^ckpt_(\d+)\.ckpt$")
_PY_SCALARS = {"bool": bool, "int": int, "float": float}


class IncompatibleCheckpointError(ValueError):
  """A checkpoint verifies but its tree differs from the target: a different config."""



def checkpoint_path(directory: str, step: int) -> str:
  """The file that `save(directory, step, ...)` writes."""
  return f"{directory.rstrip('/')}/ckpt_{step:09d}.ckpt"


def list_steps(directory: str) -> list[int]:
  """Sorted steps of the checkpoint files in `directory` ([] if it does not exist).

  Only names `ckpt_<digits>.ckpt` count; temp files of interrupted saves and
  unrelated files are ignored. Listed files are not verified.
  """
  if not files.isdir(directory):
    return []
  steps = []
  for name in files.listdir(directory):
    match = _NAME_RE.match(name.rstrip("/"))
    if match:
      steps.append(int(match.group(1)))
  return sorted(steps)


def _flatten(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
  """(keystr path, leaf) pairs with `None` as a leaf, so Nones are checked too."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: x is None)
  return [(jax.tree_util.keystr(p), leaf) for p, leaf in leaves], treedef


def _to_host(flat: list[tuple[str, Any]]) -> list[Any]:
  """Leaves with jax arrays copied to host numpy arrays; other leaves pass through.

  Arrays spread over several processes are gathered (a collective: every
  process must call `save`).
  """
  host = []
  for path, leaf in flat:
    if isinstance(leaf, jax.Array):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        raise TypeError(f"Leaf {path} is a typed PRNG key; store "
                        "jax.random.key_data.")
      leaf = sharding.to_host(leaf)
    host.append(leaf)
  return host


def _describe(path: str, leaf: Any) -> tuple[dict[str, Any], np.ndarray | None]:
  """Header entry for one host leaf, plus its little-endian array (None if scalar)."""
  if leaf is None:
    return {"path": path, "kind": "none"}, None
  for kind, cls in _PY_SCALARS.items():
    if type(leaf) is cls:  # pylint: disable=unidiomatic-typecheck
      return {"path": path, "kind": kind, "value": leaf}, None
  if not isinstance(leaf, np.ndarray | np.generic):
    raise TypeError(f"Cannot checkpoint leaf {path} of type {type(leaf).__name__}.")
  arr = np.asarray(leaf, dtype=leaf.dtype.newbyteorder("<"))  # tobytes: C order.
  entry = {"path": path, "kind": "array", "dtype": arr.dtype.name,
           "shape": list(arr.shape), "nbytes": arr.nbytes}
  return entry, arr


def _serialize(step: int, state: Any,
               metadata: dict) -> tuple[bytes, list[np.ndarray]]:
  """(JSON header, host arrays in leaf order) of `state`."""
  flat, _ = _flatten(state)
  host = _to_host(flat)

  entries, arrays = [], []
  for (path, _), leaf in zip(flat, host, strict=True):
    entry, arr = _describe(path, leaf)
    entries.append(entry)
    if arr is not None:
      arrays.append(arr)
  header = {"step": step, "metadata": metadata, "leaves": entries}
  return json.dumps(header).encode(), arrays


def _pieces(header: bytes, arrays: list[np.ndarray]) -> Iterator[bytes]:
  """The envelope's payload, one array at a time (never one big buffer)."""
  yield _LEN.pack(len(header))
  yield header
  for arr in arrays:
    yield arr.tobytes()


def save(directory: str, step: int, state: Any, metadata: dict,
         keep: int = 3) -> str:
  """Atomically writes `state` and `metadata` as checkpoint `step`, then prunes.

  The file is written under a temp name in `directory`, closed (flushed) and
  renamed into place, so a crash leaves the previous checkpoints intact plus at
  worst a stray temp file, which everything here ignores. After the rename,
  checkpoints with a step above `step` are deleted (they belong to a run that
  was rewound, e.g. past a corrupt checkpoint, and would otherwise be restored
  instead of this one), then all but the newest `keep`. Files not named like
  checkpoints are never touched.

  In a multi-process run every process must call `save` (arrays that are not
  fully addressable are gathered collectively); only process 0 writes.

  Args:
    directory: Local path or `gs://` URL; created if missing.
    step: Non-negative step number, used in the file name.
    state: Pytree of jax/numpy arrays, numpy scalars, Python bool/int/float
      and None (flax.struct dataclasses, dicts, tuples, lists...).
    metadata: JSON-serializable dict, returned by `restore_latest` after a JSON
      round trip (so tuples come back as lists).
    keep: How many checkpoints to keep, >= 1.

  Returns:
    The path of the checkpoint file.

  Raises:
    TypeError: A leaf or `metadata` cannot be serialized; nothing is written.
  """
  if step < 0 or keep < 1:
    raise ValueError(f"Need step >= 0 and keep >= 1, got step={step} keep={keep}.")
  path = checkpoint_path(directory, step)
  header, arrays = _serialize(step, state, metadata)  # Collective: all processes.
  if jax.process_index() != 0:
    return path
  files.makedirs(directory)
  _ENVELOPE.write(path, _pieces(header, arrays))
  steps = list_steps(directory)
  rewound = [s for s in steps if s > step]
  if rewound:
    logging.warning("Saved %s; deleting checkpoints %s of the rewound run.",
                    path, rewound)
  older = [s for s in steps if s < step]
  for s in rewound + older[:max(len(older) - (keep - 1), 0)]:
    try:
      files.remove(checkpoint_path(directory, s))
    except FileNotFoundError:
      pass
  return path


def _read_verified(path: str) -> tuple[dict[str, Any], memoryview]:
  """(header, array data) of an intact file; files.CorruptFileError otherwise."""
  payload = _ENVELOPE.read(path)
  (header_len,) = _LEN.unpack(payload[:_LEN.size])
  header = json.loads(bytes(payload[_LEN.size:_LEN.size + header_len]))
  arrays = payload[_LEN.size + header_len:]
  if sum(e.get("nbytes", 0) for e in header["leaves"]) != len(arrays):
    raise files.CorruptFileError(f"{path}: array data size does not match the header")
  return header, arrays


def _fmt(kind: str, dtype: Any = None, shape: Any = ()) -> str:
  """'float32[8,2000]' for arrays, the kind otherwise: a leaf's full signature."""
  if kind != "array":
    return kind
  return f"{np.dtype(dtype).name}[{','.join(str(d) for d in shape)}]"


def _target_signature(leaf: Any) -> str:
  """`_fmt` of what a target leaf expects; array leaves may be abstract."""
  if leaf is None:
    return "none"
  for kind, cls in _PY_SCALARS.items():
    if type(leaf) is cls:  # pylint: disable=unidiomatic-typecheck
      return kind
  return _fmt("array", leaf.dtype, leaf.shape)


def _restore_into(path: str, header: dict[str, Any], arrays: memoryview,
                  target: Any) -> Any:
  """Rebuilds `target`'s tree from a verified file, or raises on any mismatch."""
  flat, treedef = _flatten(target)
  entries = header["leaves"]
  stored = [(e["path"], _fmt(e["kind"], e.get("dtype"), e.get("shape", ())))
            for e in entries]
  wanted = [(p, _target_signature(leaf)) for p, leaf in flat]
  if stored != wanted:
    i = 0
    while i < min(len(stored), len(wanted)) and stored[i] == wanted[i]:
      i += 1
    have = " ".join(stored[i]) if i < len(stored) else "nothing"
    want = " ".join(wanted[i]) if i < len(wanted) else "nothing"
    raise IncompatibleCheckpointError(
        f"{path}: checkpoint leaf {have} != target leaf {want} (different config?)")
  leaves, offset = [], 0
  for (_, leaf), entry in zip(flat, entries, strict=True):
    if entry["kind"] != "array":
      leaves.append(entry.get("value"))
      continue
    dtype = np.dtype(leaf.dtype)
    end = offset + entry["nbytes"]
    buf = np.frombuffer(arrays[offset:end], dtype=dtype.newbyteorder("<"))
    leaves.append(buf.astype(dtype).reshape(entry["shape"]))
    offset = end
  return jax.tree_util.tree_unflatten(treedef, leaves)


def restore_latest(directory: str, target: Any) -> tuple[int, Any, dict] | None:
  """Restores the newest intact checkpoint in `directory` into `target`'s structure.

  Files that fail verification (cut short, bad checksum) are skipped with a
  warning naming them, and the next older one is tried. I/O errors other than
  a file vanishing are raised, not skipped: falling back on a transient error
  would make the next `save` delete the newer, good checkpoints. No file is
  modified.

  Args:
    directory: Local path or `gs://` URL (need not exist).
    target: A pytree like the saved state, e.g. the freshly initialized one;
      only its structure, shapes and dtypes are used, so array leaves may be
      `jax.ShapeDtypeStruct`s (but Python scalars must stay Python scalars,
      which `jax.eval_shape` does not do).

  Returns:
    `(step, state, metadata)` with array leaves as fresh, writable numpy arrays
    (place them on devices as needed), or None if no checkpoint verifies.

  Raises:
    IncompatibleCheckpointError: The newest intact checkpoint has other leaf
      paths, kinds, shapes or dtypes than `target`.
  """
  for step in reversed(list_steps(directory)):
    path = checkpoint_path(directory, step)
    try:
      return (step,) + restore(directory, step, target)
    except FileNotFoundError:
      logging.warning("Checkpoint %s vanished while restoring; skipping.", path)
    except files.CorruptFileError as e:
      logging.warning("Skipping corrupt checkpoint %s: %s.", path, e)
  return None


def restore(directory: str, step: int, target: Any) -> tuple[Any, dict]:
  """(state, metadata) of checkpoint `step` (see `restore_latest`).

  Raises:
    FileNotFoundError: no checkpoint `step`.
    files.CorruptFileError: the file does not verify.
    IncompatibleCheckpointError: it has another tree than `target`.
  """
  path = checkpoint_path(directory, step)
  header, arrays = _read_verified(path)
  if header["step"] != step:
    raise files.CorruptFileError(f"{path}: header says step {header['step']}")
  return _restore_into(path, header, arrays, target), header["metadata"]


def read(path: str) -> list[dict]:
  """Records of a JSON-lines file ([] if missing), skipping damaged lines.

  A last line without its newline (a write cut short by a crash) is dropped;
  any line that is not a JSON object is skipped with a warning. Metrics are
  never worth stopping a run for.
  """
  if not files.exists(path):
    return []
  lines = files.read_bytes(path).split(b"\n")
  if lines[-1]:
    logging.warning("%s: dropping partial last line %r.", path, lines[-1][:80])
  records = []
  for number, line in enumerate(lines[:-1], start=1):
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict):
      records.append(record)
    elif line.strip():
      logging.warning("%s:%d: skipping damaged line %r.", path, number, line[:80])
  return records



def _lines(records: list[dict]) -> bytes:
  """JSON lines, each ending in a newline: a record is complete once it has one."""
  return b"".join(json.dumps(r).encode() + b"\n" for r in records)


class JsonlLog:
  """Append-only metrics log, one JSON object per line, rewindable on resume.

  Local files are appended to in place (one write per record). `gs://` objects
  cannot be appended to, so there each `append` reads the object and rewrites it
  whole through a temp object and rename: O(file size) per call, fine for one
  record per meta-step of a moderate run.
  """

  def __init__(self, path: str):
    self.path = path

  def append(self, record: dict) -> None:
    """Writes `record` (JSON-serializable; should carry "step") as one line."""
    line = _lines([record])
    if files.is_url(self.path):

      old = files.read_bytes(self.path) if files.exists(self.path) else b""
      files.write_atomic(self.path, old + line)
      return
    with files.open(self.path, "ab") as f:  # Closing flushes.
      f.write(line)

  def read(self) -> list[dict]:
    """See the module-level `read`."""
    return read(self.path)

  def truncate_after(self, step: int) -> None:
    """Atomically keeps only records with record["step"] <= `step`.

    Call it when resuming from checkpoint `step` (-1 for a fresh start), so steps
    logged after that checkpoint by the lost run do not appear twice. Records
    without a "step" key are kept; damaged lines are dropped. A missing file
    stays missing.
    """
    if not files.exists(self.path):
      return
    kept = [r for r in read(self.path) if r.get("step", step) <= step]
    files.write_atomic(self.path, _lines(kept))
