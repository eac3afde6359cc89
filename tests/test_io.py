"""lopt_selftrain.files: atomic writes, the checksummed envelope, URL routing."""

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from lopt_selftrain import files

REPO = Path(__file__).resolve().parents[1]
ENVELOPE = files.Envelope(b"TESTIO01", "a test file")


def _python(script: str, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
  path = tmp_path / "f"
  files.write_atomic(str(path), b"old")
  files.write_atomic(str(path), lambda f: f.write(b"new"))
  assert path.read_bytes() == b"new"
  assert os.listdir(tmp_path) == ["f"]


def test_exception_before_rename_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "f"
  files.write_atomic(str(path), b"old")

  def crash(src, dst):
    raise KeyboardInterrupt  # Not an Exception: cleanup must still run.

  monkeypatch.setattr(files, "rename", crash)
  with pytest.raises(KeyboardInterrupt):
    files.write_atomic(str(path), b"new")
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["f"]


_KILLED_AT_RENAME = """
import os, sys
from lopt_selftrain import files
path, when = sys.argv[1], sys.argv[2]
files.write_atomic(path, b"old")
real_replace = os.replace
def killed(src, dst):
  if when == "after":
    real_replace(src, dst)
  os._exit(9)  # Like kill -9: no cleanup, no flush of Python buffers.
os.replace = killed
files.write_atomic(path, b"new")
"""


@pytest.mark.parametrize("when, content", [("before", b"old"),
                                           ("after", b"new")])
def test_a_killed_writer_leaves_the_old_or_the_new_file(tmp_path, when, content):
  path = tmp_path / "f"
  result = _python(_KILLED_AT_RENAME, str(path), when)
  assert result.returncode == 9, result.stderr[-2000:]
  assert path.read_bytes() == content
  stray = [n for n in os.listdir(tmp_path) if n != "f"]
  if when == "before":  # The complete temp file stays behind, ignorable.
    assert len(stray) == 1 and stray[0].startswith("f.tmp-")
    assert (tmp_path / stray[0]).read_bytes() == b"new"
  else:
    assert stray == []


def test_envelope_round_trip_streams_pieces(tmp_path):
  path = str(tmp_path / "x.bin")
  ENVELOPE.write(path, iter([b"ab", b"", b"cde"]))
  assert bytes(ENVELOPE.read(path)) == b"abcde"
  data = (tmp_path / "x.bin").read_bytes()
  assert data.startswith(b"TESTIO01abcde") and len(data) == 8 + 5 + 32
  ENVELOPE.write(path, [])
  assert bytes(ENVELOPE.read(path)) == b""


def _flip(offset):
  def corrupt(data):
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)
  return corrupt


@pytest.mark.parametrize("corrupt, message", [
    (_flip(0), "is not a test file"),
    (_flip(7), "is not a test file"),  # The version digit.
    (_flip(10), r"corrupt \(sha256 mismatch\)"),
    (_flip(-1), r"corrupt \(sha256 mismatch\)"),
    (lambda d: d[:-1], r"corrupt \(sha256 mismatch\)"),
    (lambda d: d[:20], "cut short"),
    (lambda d: b"", "is not a test file"),
    (lambda d: b"OTHERF01" + d[8:], "is not a test file"),
], ids=["magic", "version", "payload", "digest", "last_byte", "truncated",
        "empty", "wrong_magic"])
def test_damaged_envelopes_raise_one_error_type(tmp_path, corrupt, message):
  path = tmp_path / "x.bin"
  ENVELOPE.write(str(path), [b"payload " * 4])
  path.write_bytes(corrupt(path.read_bytes()))
  with pytest.raises(files.CorruptFileError, match=message) as error:
    ENVELOPE.read(str(path))
  assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError):
    ENVELOPE.read(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError):
    files.remove(str(tmp_path / "missing"))


def test_local_helpers(tmp_path):
  d = str(tmp_path / "a" / "b")
  files.makedirs(d)
  files.makedirs(d)  # Existing is fine.
  assert files.isdir(d) and not files.exists(f"{d}/x")
  with files.open(f"{d}/x", "w") as f:
    f.write("1")
  with files.open(f"{d}/x", "a") as f:
    f.write("2")
  assert files.read_bytes(f"{d}/x") == b"12" and files.listdir(d) == ["x"]
  files.rename(f"{d}/x", f"{d}/y")
  assert files.listdir(d) == ["y"]
  files.remove(f"{d}/y")
  assert files.listdir(d) == []
  with pytest.raises(ValueError, match="one is a URL"):
    files.rename(f"{d}/y", "gs://bucket/y")


class _FakeNotFound(Exception):
  pass


class _FakeOpError(Exception):
  pass


def _fake_tensorflow(store: dict[str, bytes], calls: list[str]):
  """A `tensorflow` module whose gfile keeps files in `store`."""

  class GFile:
    def __init__(self, path, mode="r"):
      calls.append(f"GFile {path} {mode}")
      if "r" in mode and path not in store:
        raise _FakeNotFound(path)
      self.path, self.mode = path, mode
      self.data = store.get(path, b"") if "a" in mode else b""

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      if "r" not in self.mode:
        store[self.path] = self.data

    def read(self):
      return store[self.path]

    def write(self, data):
      self.data += data.encode() if isinstance(data, str) else data

  def remove(path):
    calls.append(f"remove {path}")
    if path not in store:
      raise _FakeNotFound(path)
    del store[path]

  def rename(src, dst, overwrite=False):
    calls.append(f"rename {src} {dst} {overwrite}")
    store[dst] = store.pop(src)

  def denied(path):
    raise _FakeOpError(f"permission denied: {path}")

  gfile = types.SimpleNamespace(
      GFile=GFile, remove=remove, rename=rename, makedirs=denied,
      exists=lambda p: calls.append(f"exists {p}") or p in store,
      isdir=lambda p: any(k.startswith(p.rstrip("/") + "/") for k in store),
      listdir=lambda p: sorted(k[len(p.rstrip("/")) + 1:] for k in store
                               if k.startswith(p.rstrip("/") + "/")))
  errors = types.SimpleNamespace(NotFoundError=_FakeNotFound,
                                 OpError=(_FakeNotFound, _FakeOpError))
  return types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile),
                               errors=errors)


def test_urls_go_through_gfile_and_raise_os_errors(tmp_path, monkeypatch):
  store, calls = {}, []
  monkeypatch.setitem(sys.modules, "tensorflow", _fake_tensorflow(store, calls))
  monkeypatch.chdir(tmp_path)  # A URL mistaken for a local path would land here.
  ENVELOPE.write("gs://b/run/x.bin", [b"abc"])
  assert list(store) == ["gs://b/run/x.bin"] and calls[-1].startswith(
      "rename gs://b/run/x.bin.tmp-")
  assert bytes(ENVELOPE.read("gs://b/run/x.bin")) == b"abc"
  assert files.exists("gs://b/run/x.bin") and files.isdir("gs://b/run")
  assert files.listdir("gs://b/run") == ["x.bin"]
  with files.open("gs://b/run/log", "ab") as f:
    f.write(b"1")
  assert store["gs://b/run/log"] == b"1"
  files.remove("gs://b/run/x.bin")
  with pytest.raises(FileNotFoundError, match="gs://b/run/x.bin"):
    files.remove("gs://b/run/x.bin")
  with pytest.raises(FileNotFoundError):
    files.read_bytes("gs://b/missing")
  with pytest.raises(OSError, match="permission denied"):
    files.makedirs("gs://b/other")
  assert os.listdir(tmp_path) == []


_LOCAL_ONLY = """
import sys
import jax, numpy as np
from lopt_selftrain import checkpoint, files
d = sys.argv[1]
files.write_atomic(f"{d}/a", b"x")
assert files.read_bytes(f"{d}/a") == b"x"
checkpoint.save(f"{d}/ckpt", 1, {"w": jax.numpy.ones(3), "n": None}, {"m": 1})
target = {"w": np.zeros(3, np.float32), "n": None}
step, state, meta = checkpoint.restore_latest(f"{d}/ckpt", target)
assert step == 1 and state["w"].tolist() == [1, 1, 1] and meta == {"m": 1}
log = checkpoint.JsonlLog(f"{d}/metrics.jsonl")
log.append({"step": 0})
log.truncate_after(0)
assert log.read() == [{"step": 0}]
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
print("tensorflow modules:", loaded)
"""


def test_local_checkpoints_and_files_never_import_tensorflow(tmp_path):
  result = _python(_LOCAL_ONLY, str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tensorflow modules: []" in result.stdout


# TensorFlow absent: the path finder does not see it (find_spec is None, an
# import fails), and no launch script runs. `import lopt_selftrain` imports lo's few modules that
# import TensorFlow with stand-ins and takes them out again (no_tensorflow).
_EXPORT_WITHOUT_TENSORFLOW = """
import importlib.machinery, importlib.util, sys

class NoTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
      return None
    return super().find_spec(name, path, target)

sys.meta_path[:] = [NoTensorFlow if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
assert importlib.util.find_spec("tensorflow") is None
import jax, jax.numpy as jnp, optax
import lopt_selftrain
from learned_optimization.learned_optimizers import base as lopt_base
from lopt_selftrain import export
spec = export.LearnedOptSpec.of(lopt_base.LearnableAdam, initial_lr=0.01,
                                use_summary=False)
path = sys.argv[1] + "/adam.lopt"
export.write(path, spec, spec.build().init(jax.random.PRNGKey(0)), {"s": 1})
assert export.read(path).provenance == {"s": 1}
tx = lopt_selftrain.load_optax(path)
params = {"w": jnp.ones(3)}
grads = {"w": jnp.ones(3)}
updates, _ = jax.jit(tx.update)(grads, tx.init(params), params, loss=1.0)
assert float(updates["w"][0]) < 0, updates
assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
try:
  import tensorflow  # noqa: F401
  raise AssertionError("a stand-in outlived lo's import")
except ModuleNotFoundError:
  pass
apps = [m for m in sys.modules if m.startswith("lopt_selftrain.apps")]
print("apps:", apps)
"""


def test_load_optax_without_tensorflow_and_without_apps(tmp_path):
  result = _python(_EXPORT_WITHOUT_TENSORFLOW, str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "apps: []" in result.stdout


def test_data_cache_on_a_url(monkeypatch):
  """The MNIST-1D cache round-trips through real gfile (TF's in-memory ram://)."""
  from lopt_selftrain.tasks import data

  generated = data.load_mnist1d(500, data_dir="ram://io_test/cache")
  monkeypatch.setattr(data, "_generate_mnist1d", None)  # Must come from cache.
  cached = data.load_mnist1d(500, data_dir="ram://io_test/cache")
  assert files.listdir("ram://io_test/cache") == ["mnist1d_n500_seed42.npz"]
  for key, value in generated.items():
    assert cached[key].tobytes() == value.tobytes()
