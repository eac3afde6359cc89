"""lopt_selftrain.no_tensorflow and launch/no_tensorflow.py: the apps run
where TensorFlow cannot be installed."""

import json
import subprocess
import sys
from pathlib import Path

import apprun
import pytest

from lopt_selftrain import no_tensorflow

REPO = Path(__file__).resolve().parents[1]


def stand_in(name: str):
  finder = no_tensorflow.StandInFinder()
  return finder.create_module(finder.find_spec(name))


def test_changes_nothing_where_tensorflow_is_installed():
  before = list(sys.meta_path)
  assert not no_tensorflow.install()
  assert sys.meta_path == before


@pytest.mark.parametrize("name,found", [
    ("tensorflow", True), ("tensorflow.compat.v2", True),
    ("tensorflow_datasets", True), ("flax.metrics.tensorboard", True),
    ("tensorflowx", False), ("tensorboard", False), ("flax.metrics", False),
    ("flax", False)])
def test_stands_in_only_for_tensorflow_and_what_needs_it(name, found):
  assert (no_tensorflow.StandInFinder().find_spec(name) is not None) == found


def test_local_gfile_and_errors(tmp_path):
  tf = stand_in("tensorflow")
  gfile = tf.io.gfile
  gfile.makedirs(str(tmp_path / "a" / "b"))
  path = str(tmp_path / "a" / "b" / "x")
  with gfile.GFile(path, "w") as f:
    f.write("1")
  assert gfile.exists(path) and gfile.isdir(str(tmp_path / "a"))
  assert gfile.listdir(str(tmp_path / "a" / "b")) == ["x"]
  other = str(tmp_path / "y")
  with gfile.GFile(other, "w") as f:
    f.write("2")
  with pytest.raises(FileExistsError):
    gfile.rename(path, other)
  gfile.rename(path, other, overwrite=True)
  with gfile.GFile(other, "rb") as f:
    assert f.read() == b"1"
  gfile.remove(other)
  with pytest.raises(tf.errors.NotFoundError):  # caught as TF's error is
    gfile.remove(other)
  assert issubclass(tf.errors.NotFoundError, tf.errors.OpError)
  with pytest.raises(ValueError, match="only local paths"):
    gfile.exists("gs://bucket/x")


def test_summaries_are_no_ops_and_anything_else_raises_when_called():
  tf = stand_in("tensorflow")
  writer = tf.summary.create_file_writer("/nonexistent")
  with writer.as_default(step=3):
    tf.summary.scalar("a", 1.0)
  writer.flush()
  tf.compat.v2.enable_v2_behavior()
  resize = tf.image.resize  # attribute access is fine (import-time use) ...
  with pytest.raises(RuntimeError, match="tensorflow.image.resize was called"):
    resize(1, (2, 2))  # ... a call is not
  with pytest.raises(RuntimeError, match="tensorflow_datasets.load was called"):
    stand_in("tensorflow_datasets").load("mnist")


HIDE_TENSORFLOW_AND_RUN = """
import os, sys
os.environ["LOPT_HIDE_TENSORFLOW"] = "1"  # the installed TensorFlow counts as missing
sys.path.insert(0, {launch!r})
import no_tensorflow  # launch/no_tensorflow.py, the runner
sys.argv[1:] = {argv!r}
try:
  no_tensorflow.main()
finally:  # absl's app.run exits
  print("tensorflow:", type(sys.modules["tensorflow"]).__name__)
"""


def test_train_app_runs_without_tensorflow(tmp_path, tmp_path_factory):
  log_dir = tmp_path / "run"
  argv = apprun.app_command(str(log_dir), bindings=(
      "PopulationTrainer.num_meta_steps = 3",), tensorflow=True)[2:]
  script = HIDE_TENSORFLOW_AND_RUN.format(launch=str(REPO / "launch"),
                                          argv=argv)
  result = subprocess.run([sys.executable, "-c", script],
                          env=apprun.app_env(tmp_path_factory), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tensorflow: _StandInModule" in result.stdout
  records = [json.loads(line) for line in
             (log_dir / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["step"] == 3
  assert any((log_dir / "checkpoints").iterdir())
