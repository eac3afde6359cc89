"""Bad input to the train app: one clear `error:` line, a non-zero exit, and the
log dir's existing files (checkpoints above all) left byte for byte as they were.

Every row is a real `python -m lopt_selftrain.train` process; they all run in
parallel (module fixture), and each row is then checked by its own test.
"""

import concurrent.futures
import pathlib
import re
import shutil

import apprun
import pytest

from lopt_selftrain import train

WAIT_S = 600


def _tiny_config_without(line_prefix, path):
  """A copy of the tiny config lacking the bindings that start with `line_prefix`."""
  lines = pathlib.Path(apprun.TINY_CONFIG).read_text().splitlines(keepends=True)
  path.write_text("".join(x for x in lines if not x.startswith(line_prefix)))
  return path


def _binding(binding):
  """Row command: the tiny config plus one bad gin binding."""
  return lambda d, t: apprun.app_command(d, bindings=[binding])


def _snapshot(directory):
  """{relative path: bytes} of every file under `directory`."""
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob("*")) if p.is_file()}


# name: (how to call the app for log dir D under tmp T, expected error regex).
ROWS = {
    "unknown_configurable": (
        _binding("NoSuchConfigurable.size = 1"),
        r"No configurable matching 'NoSuchConfigurable'"),
    "missing_required_binding": (
        lambda d, t: apprun.app_command(d, gin_configs=[_tiny_config_without(
            "PopulationTrainer.task_mixture", t / "no_mixture.gin")]),
        r"Required bindings for `PopulationTrainer` .*'task_mixture'"),
    "population_of_one": (
        _binding("PopulationTrainer.population_size = 1"),
        r"population_size must be >= 2, got 1"),
    "exploit_fraction_one": (
        _binding("PBTConfig.exploit_fraction = 1.0"),
        r"exploit_fraction must be in \[0, 1\), got 1.0"),
    "inverted_step_scale_range": (
        _binding("PBTConfig.step_scale_range = (4.0, 0.25)"),
        r"step_scale_range must be \(low, high\) with 0 <= low < high"),
    "step_scale_outside_its_range": (
        _binding("PBTConfig.step_scale_range = (0.25, 4.0)"),
        r"SelfUpdate.step_scale = 0.01 starts members at .* outside "
        r"PBTConfig.step_scale_range"),
    "unknown_teacher": (
        _binding("PopulationTrainer.teacher = 'oracle'"),
        r"teacher must be one of .*got 'oracle'"),
    "unknown_estimator": (
        _binding("EstimatorConfig.kind = 'sgd'"),
        r"gradient estimator 'sgd'"),
    "log_dir_under_a_file": (
        lambda d, t: apprun.app_command(f"{d}/metrics.jsonl/run"),
        r"--train_log_dir=.*/metrics.jsonl/run is not writable"),
    "absent_tfds_dataset": (
        lambda d, t: apprun.app_command(
            d, gin_configs=[apprun.TINY_CONFIG,
                            "gin_configs/tasks/tfds_fashion_mnist.gin"],
            bindings=[f"TFDS_DIR = '{t}'"]),
        r"TFDS dataset 'fashion_mnist' .*not prepared in data_dir="),
}
INCOMPATIBLE = "checkpoint_of_another_population_size"


def _run(command, env, output):
  """Runs the app to the end; (exit status, stderr)."""
  status = apprun.start(command, env, output).wait(timeout=WAIT_S)
  return status, apprun.stderr(output)


def _bad_row(name, seed_dir, tmp, env):
  log_dir = tmp / "run"
  shutil.copytree(seed_dir, log_dir)
  make_command, _ = ROWS[name]
  before = _snapshot(log_dir)
  status, err = _run(make_command(str(log_dir), tmp), env, tmp / "app")
  return status, err, before, _snapshot(log_dir)


def _incompatible_row(tmp, env):
  """Trains a population of 2 with the app, then reruns it asking for 4."""
  log_dir = tmp / "run"
  status, err = _run(apprun.app_command(str(log_dir), "--max_outer_steps=3"),
                     env, tmp / "app_trained")
  assert status == 0, err[-3000:]
  before = _snapshot(log_dir)
  status, err = _run(apprun.app_command(
      str(log_dir), bindings=["PopulationTrainer.population_size = 4"]), env,
      tmp / "app")
  return status, err, before, _snapshot(log_dir)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{row: (exit status, stderr, files before, files after)}, run in parallel.

  The log dirs start as copies of a short in-process run of the tiny config.
  """
  seed_dir = tmp_path_factory.mktemp("seed")
  train.train(apprun.gin_trainer(), str(seed_dir), max_outer_steps=0)
  env = apprun.app_env(tmp_path_factory)
  with concurrent.futures.ThreadPoolExecutor(len(ROWS) + 1) as pool:
    futures = {name: pool.submit(_bad_row, name, seed_dir,
                                 tmp_path_factory.mktemp(name), env)
               for name in ROWS}
    futures[INCOMPATIBLE] = pool.submit(
        _incompatible_row, tmp_path_factory.mktemp(INCOMPATIBLE), env)
    return {name: f.result() for name, f in futures.items()}


def _assert_one_error_line(status, err, pattern):
  line = apprun.last_line(err)
  assert status != 0, err[-3000:]
  assert line.startswith("error: ") and re.search(pattern, line), err[-3000:]


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_fails_at_start_up_with_one_line(results, name):
  status, err, before, after = results[name]
  _assert_one_error_line(status, err, ROWS[name][1])
  assert any(p.startswith("checkpoints/") for p in before)
  assert after == before  # nothing written: it failed before training


def test_checkpoint_of_another_config_is_refused_and_kept(results):
  status, err, before, after = results[INCOMPATIBLE]
  newest = max(p for p in before if p.startswith("checkpoints/"))
  _assert_one_error_line(status, err, re.escape(newest) + r": checkpoint leaf "
                         r".*float32\[2,.* != target leaf .*float32\[4,")
  assert {p: after[p] for p in before} == before
  assert not [p for p in after.keys() - before.keys()
              if not p.startswith("events.out.tfevents.")]
