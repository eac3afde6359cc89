"""Tests for lopt_selftrain.checkpoint: exact round trips, pruning, crash safety."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import lopt_selftrain  # noqa: F401  (before lo / flax users; conftest does too)
from lopt_selftrain import checkpoint


@struct.dataclass
class Inner:
  params: Any
  key: Any


@struct.dataclass
class State:
  inner: Inner
  opt: Any
  step: int
  config: str = struct.field(pytree_node=False, default="cfg")


def make_state(seed: int = 0, n: int = 4) -> State:
  rng = np.random.default_rng(seed)
  w = rng.standard_normal((8, n)).astype(np.float32)
  w[0, :3] = [np.nan, -0.0, np.inf]  # Bitwise equality must hold for these too.
  return State(
      inner=Inner(params={"w": jnp.asarray(w), "b": jnp.zeros((8,), jnp.bfloat16)},
                  key=jax.random.split(jax.random.PRNGKey(seed), 8)),
      opt=(np.arange(8, dtype=np.int32) * (seed + 1), None,
           {"lr": 0.1 * (seed + 1), "on": True, "m": np.float32(seed)}),
      step=seed * 10,
  )


def leaves_with_none(tree: Any) -> list[Any]:
  return jax.tree_util.tree_leaves(tree, is_leaf=lambda x: x is None)


def assert_bitwise_equal(got: Any, want: Any) -> None:
  assert (jax.tree_util.tree_structure(got, is_leaf=lambda x: x is None)
          == jax.tree_util.tree_structure(want, is_leaf=lambda x: x is None))
  for g, w in zip(leaves_with_none(got), leaves_with_none(want), strict=True):
    if w is None or isinstance(w, bool | int | float):
      assert type(g) is type(w) and (g == w or (g != g and w != w))
      continue
    w = np.asarray(w)
    assert isinstance(g, np.ndarray) and g.flags.writeable
    assert (g.dtype, g.shape) == (w.dtype, w.shape)
    assert g.tobytes() == w.tobytes()


def snapshot(directory: str) -> dict[str, bytes]:
  return {name: open(os.path.join(directory, name), "rb").read()
          for name in sorted(os.listdir(directory))}


def test_round_trip_is_bitwise_exact(tmp_path):
  state = make_state(1)
  meta = {"lineage": [[0, 1], [2]], "fingerprint": "abc", "gin": "a.b = 1\n"}
  path = checkpoint.save(str(tmp_path), 1230, state, meta)
  assert path == f"{tmp_path}/ckpt_000001230.ckpt"
  assert checkpoint.list_steps(str(tmp_path)) == [1230]

  step, restored, got_meta = checkpoint.restore_latest(str(tmp_path), make_state(7))
  assert (step, got_meta) == (1230, meta)
  assert isinstance(restored, State) and restored.config == "cfg"
  assert restored.inner.key.dtype == np.uint32
  assert_bitwise_equal(restored, state)

  # Array leaves of the target may be abstract (Python scalars stay concrete).
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x,
      make_state(7))
  assert_bitwise_equal(checkpoint.restore_latest(str(tmp_path), abstract)[1], state)


def test_non_local_paths_work_through_gfile():
  directory = "ram://ckpt_test_non_local"
  state = make_state(2)
  checkpoint.save(directory, 3, state, {})
  assert_bitwise_equal(checkpoint.restore_latest(directory, state)[1], state)
  log = checkpoint.JsonlLog(f"{directory}/metrics.jsonl")
  for s in range(3):
    log.append({"step": s})  # Emulated append: read + atomic rewrite.
  log.truncate_after(1)
  assert log.read() == [{"step": 0}, {"step": 1}]


def test_missing_directory():
  assert checkpoint.list_steps("/nonexistent/ckpts") == []
  assert checkpoint.restore_latest("/nonexistent/ckpts", make_state()) is None


def test_keep_prunes_oldest_and_spares_unrelated_files(tmp_path):
  d = str(tmp_path)
  for name in ("notes.txt", "ckpt_abc.ckpt", "ckpt_000000001.ckpt.bak"):
    (tmp_path / name).write_bytes(b"user data " + name.encode())
  unrelated = snapshot(d)
  for step in range(1, 6):
    checkpoint.save(d, step, make_state(step), {"s": step}, keep=2)
  assert checkpoint.list_steps(d) == [4, 5]
  after = snapshot(d)
  assert {k: after[k] for k in unrelated} == unrelated
  assert set(after) == set(unrelated) | {"ckpt_000000004.ckpt", "ckpt_000000005.ckpt"}
  assert checkpoint.restore_latest(d, make_state())[0] == 5


def test_saving_an_earlier_step_deletes_the_rewound_future(tmp_path, caplog):
  d = str(tmp_path)
  for step in (10, 20, 30):
    checkpoint.save(d, step, make_state(), {})
  with caplog.at_level(logging.WARNING):
    checkpoint.save(d, 15, make_state(3), {})
  assert checkpoint.list_steps(d) == [10, 15]
  assert "[20, 30]" in caplog.text
  assert_bitwise_equal(checkpoint.restore_latest(d, make_state())[1], make_state(3))


def _truncate_half(data: bytes) -> bytes:
  return data[:len(data) // 2]


def _flip(offset: int):
  def corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)
  return corrupt


@pytest.mark.parametrize("corrupt", [
    _truncate_half, lambda d: d[:-1], lambda d: b"", _flip(3), _flip(20),
    _flip(-100), _flip(-1)], ids=["half", "last_byte", "empty", "magic",
                                  "header", "arrays", "digest"])
def test_corrupt_newest_falls_back_with_warning(tmp_path, caplog, corrupt):
  d = str(tmp_path)
  checkpoint.save(d, 1, make_state(1), {"s": 1})
  newest = checkpoint.save(d, 2, make_state(2), {"s": 2})
  with open(newest, "rb") as f:
    data = f.read()
  with open(newest, "wb") as f:
    f.write(corrupt(data))
  with caplog.at_level(logging.WARNING):
    step, state, meta = checkpoint.restore_latest(d, make_state())
  assert (step, meta) == (1, {"s": 1})
  assert_bitwise_equal(state, make_state(1))
  assert "ckpt_000000002.ckpt" in caplog.text


def test_all_corrupt_gives_none(tmp_path, caplog):
  d = str(tmp_path)
  for step in (1, 2):
    path = checkpoint.save(d, step, make_state(), {})
    with open(path, "r+b") as f:
      f.truncate(50)
  with caplog.at_level(logging.WARNING):
    assert checkpoint.restore_latest(d, make_state()) is None
  assert "ckpt_000000001.ckpt" in caplog.text and "ckpt_000000002.ckpt" in caplog.text


def test_leftover_temp_file_is_ignored(tmp_path):
  d = str(tmp_path)
  checkpoint.save(d, 1, make_state(1), {})
  tmp = tmp_path / "ckpt_000000002.ckpt.tmp-0123abcd"
  tmp.write_bytes(b"LOPTCK01 cut short by preemption")
  assert checkpoint.list_steps(d) == [1]
  assert checkpoint.restore_latest(d, make_state())[0] == 1
  checkpoint.save(d, 2, make_state(2), {})
  assert checkpoint.list_steps(d) == [1, 2]
  assert checkpoint.restore_latest(d, make_state())[0] == 2


def _changed_shape(s: State) -> State:
  return s.replace(inner=s.inner.replace(params={**s.inner.params,
                                                 "w": jnp.zeros((8, 5))}))


def _changed_dtype(s: State) -> State:
  return s.replace(opt=(s.opt[0].astype(np.int64),) + s.opt[1:])


def _extra_leaf(s: State) -> State:
  return s.replace(inner=s.inner.replace(params={**s.inner.params,
                                                 "z": jnp.zeros(())}))


def _none_to_array(s: State) -> State:
  return s.replace(opt=(s.opt[0], np.zeros(1), s.opt[2]))


def _int_to_float(s: State) -> State:
  return s.replace(step=1.0)


@pytest.mark.parametrize("change, expected", [
    (_changed_shape, "float32[8,4] != target leaf .inner.params['w'] float32[8,5]"),
    (_changed_dtype, "int32[8] != target leaf .opt[0] int64[8]"),
    (_extra_leaf, "leaf .inner.key uint32[8,2] != target leaf .inner.params['z'] float32[]"),
    (_none_to_array, ".opt[1] none != target leaf .opt[1] float64[1]"),
    (_int_to_float, ".step int != target leaf .step float"),
])
def test_incompatible_target_raises_and_touches_nothing(tmp_path, change, expected):
  d = str(tmp_path)
  checkpoint.save(d, 1, make_state(), {})
  checkpoint.save(d, 2, make_state(), {})
  before = snapshot(d)
  with pytest.raises(checkpoint.IncompatibleCheckpointError) as err:
    checkpoint.restore_latest(d, change(make_state()))
  message = str(err.value)
  assert "\n" not in message and "ckpt_000000002.ckpt" in message
  assert expected in message
  assert snapshot(d) == before


def test_unserializable_input_writes_nothing(tmp_path):
  with pytest.raises(TypeError):
    checkpoint.save(str(tmp_path), 1, make_state(), {"bad": object()})
  with pytest.raises(TypeError, match="key_data"):
    checkpoint.save(str(tmp_path), 1, {"k": jax.random.key(0)}, {})
  with pytest.raises(TypeError, match="str"):
    checkpoint.save(str(tmp_path), 1, {"s": "text"}, {})
  assert os.listdir(tmp_path) == []


def test_jsonl_append_read_truncate(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  log = checkpoint.JsonlLog(path)
  log.truncate_after(5)  # No file yet: nothing to do, nothing created.
  assert log.read() == [] and not os.path.exists(path)
  log.append({"event": "start"})
  for step in range(6):
    log.append({"step": step, "loss": 1.0 / (step + 1)})
  assert [r.get("step") for r in log.read()] == [None, 0, 1, 2, 3, 4, 5]
  assert open(path).read().count("\n") == 7

  log.truncate_after(3)
  assert [r.get("step") for r in checkpoint.read(path)] == [None, 0, 1, 2, 3]
  assert os.listdir(tmp_path) == ["metrics.jsonl"]
  log.append({"step": 4, "loss": 0.5})  # Resumed run: each step exactly once.
  assert [r.get("step") for r in log.read()] == [None, 0, 1, 2, 3, 4]


def test_jsonl_tolerates_partial_and_damaged_lines(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  good = [{"step": 0}, {"step": 1}]
  lines = [json.dumps(r) for r in good]
  path.write_text(lines[0] + "\n" + '{"step": 9, "lo\n' + lines[1] + '\n{"step": 2, "lo')
  with caplog.at_level(logging.WARNING):
    assert checkpoint.read(str(path)) == good
  assert "partial last line" in caplog.text and "damaged line" in caplog.text
  checkpoint.JsonlLog(str(path)).truncate_after(10)
  assert path.read_text() == "".join(line + "\n" for line in lines)


_SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import lopt_selftrain
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from lopt_selftrain import checkpoint
    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("pop",))
    w = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    state = {"w": jax.device_put(w, NamedSharding(mesh, P("pop"))),
             "k": jax.device_put(np.arange(16, dtype=np.uint32).reshape(8, 2),
                                 NamedSharding(mesh, P()))}
    assert len(state["w"].sharding.device_set) == 4
    checkpoint.save(sys.argv[1], 7, state, {})
    step, got, _ = checkpoint.restore_latest(sys.argv[1], state)
    assert step == 7 and got["w"].tobytes() == w.tobytes()
    assert got["k"].tobytes() == np.asarray(state["k"]).tobytes()
    print("OK")
""")


def test_sharded_arrays_on_fake_cpu_devices(tmp_path):
  """In CI: a fresh interpreter importing only JAX and the checkpoint module
  (not TensorFlow), so it costs a JAX import."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env,
                          check=False)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]
