"""Bad input to the train app: exit status 2, exactly one `error:` line and no
traceback, and the log dir's existing files (checkpoints above all) left byte
for byte as they were.

Every row is a real app process (`apprun.app_command`: the train app through
launch/no_tensorflow.py, and `python -m lopt_selftrain.apps.train` with
TensorFlow for the TFDS row and the run dir the rerun rows start from);
they all run in parallel (module fixture), and
each row is then checked by its own test.
"""

import concurrent.futures
import pathlib
import re
import shutil

import apprun
import gin
import pytest

from lopt_selftrain import checkpoint, config, training

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
            bindings=[f"TFDS_DIR = '{t}'"], tensorflow=True),
        r"TFDS dataset 'fashion_mnist' .*not prepared in data_dir="),
}
INCOMPATIBLE = "checkpoint_of_another_population_size"
CORRUPT = "every_checkpoint_corrupt"
DRIFT = "config_drift"
DEAD = "dead_population"


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


def _trained(tmp, env):
  """A run dir of 3 steps of the tiny config, trained by the app with
  TensorFlow (checkpoints at steps 0 and 3, 2 metrics records,
  operative_config.gin, a TensorBoard events file)."""
  log_dir = tmp / "trained"
  status, err = _run(apprun.app_command(str(log_dir), "--max_meta_steps=3",
                                        tensorflow=True),
                     env, tmp / "app_trained")
  assert status == 0, err[-3000:]
  return log_dir


def _rerun_row(trained, tmp, env, damage, bindings=()):
  """Reruns a copy of the trained dir, after `damage(log_dir)`, with
  `bindings`."""
  log_dir = tmp / "run"
  shutil.copytree(trained, log_dir)
  damage(log_dir)
  before = _snapshot(log_dir)
  status, err = _run(apprun.app_command(str(log_dir), bindings=bindings), env,
                     tmp / "app")
  return status, err, before, _snapshot(log_dir)


def _garbage_checkpoints(log_dir):
  """What a bad disk or a partial copy leaves: 7 bytes in every checkpoint."""
  for path in (log_dir / "checkpoints").iterdir():
    path.write_bytes(b"garbage")


def _dead_row(tmp, env):
  """A learned optimizer that blows up from initialization, in a fresh dir;
  then the fixed config, which must start cleanly."""
  log_dir = tmp / "run"
  status, err = _run(apprun.app_command(
      str(log_dir), bindings=["MLPLOpt.step_mult = 1e30"]), env, tmp / "app")
  after = _snapshot(log_dir)
  fixed_status, fixed_err = _run(
      apprun.app_command(str(log_dir), "--max_meta_steps=0"), env,
      tmp / "app_fixed")
  assert fixed_status == 0, fixed_err[-3000:]
  steps = [r["step"] for r in checkpoint.read(str(log_dir / "metrics.jsonl"))]
  return status, err, {}, after, steps


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{row: (exit status, stderr, files before, files after)}, run in parallel.

  The log dirs start as copies of a short in-process run of the tiny config.
  """
  seed_dir = tmp_path_factory.mktemp("seed")
  training.train(apprun.gin_trainer(), str(seed_dir), max_meta_steps=0)
  env = apprun.app_env(tmp_path_factory)
  with concurrent.futures.ThreadPoolExecutor(len(ROWS) + 4) as pool:
    futures = {name: pool.submit(_bad_row, name, seed_dir,
                                 tmp_path_factory.mktemp(name), env)
               for name in ROWS}
    futures[DEAD] = pool.submit(_dead_row, tmp_path_factory.mktemp(DEAD), env)
    trained = _trained(tmp_path_factory.mktemp("trained"), env)
    reruns = {
        INCOMPATIBLE: (lambda d: None,
                       ["PopulationTrainer.population_size = 4"]),
        CORRUPT: (_garbage_checkpoints, []),
        DRIFT: (lambda d: None, ["PopulationTrainer.seed = 7",
                                 "PBTConfig.exploit_fraction = 0.25"]),
    }
    for name, (damage, bindings) in reruns.items():
      futures[name] = pool.submit(_rerun_row, trained,
                                  tmp_path_factory.mktemp(name), env, damage,
                                  bindings)
    return {name: f.result() for name, f in futures.items()}


def _assert_one_error_line(status, err, pattern):
  """Exit status 2, exactly one `error:` line, last, matching `pattern`, and
  no traceback anywhere."""
  errors = [x for x in err.splitlines() if x.startswith("error:")]
  assert status == 2, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert len(errors) == 1 and errors[0] == apprun.last_line(err), err[-3000:]
  assert re.search(pattern, errors[0]), err[-3000:]


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
  assert after == before  # not even an events file: nothing was written


def test_history_without_a_restorable_checkpoint_is_refused_and_kept(results):
  status, err, before, after = results[CORRUPT]
  _assert_one_error_line(
      status, err, r"holds checkpoint\(s\) .*ckpt_000000000.ckpt, "
      r".*ckpt_000000003.ckpt, none of which restores .* and 2 metrics "
      r"record\(s\) .*nothing was changed.*--restart")
  assert len(before) == 5  # 2 checkpoints, metrics, config, events
  assert after == before


def test_config_drift_on_resume_is_refused_and_kept(results):
  status, err, before, after = results[DRIFT]
  _assert_one_error_line(
      status, err, r"another gin config .*\(operative_config.gin\): "
      r"PBTConfig.exploit_fraction: 0.5 -> 0.25; PopulationTrainer.seed: "
      r"0 -> 7; nothing was changed.*--allow_config_change")
  assert after == before


def test_dead_population_stops_and_a_fixed_config_starts_cleanly(results):
  status, err, _, after, fixed_steps = results[DEAD]
  _assert_one_error_line(
      status, err, r"every member is non-finite at the first evaluation "
      r"\(step 0.*evaluation meta-loss in 2 of 2 members \(learned "
      r"optimizer MLPLOpt, self-update scales 0.01..0.01\).*holds no "
      r"checkpoint")
  assert list(after) == ["operative_config.gin"]  # nothing else written
  assert fixed_steps == [0]


# ---- which exceptions are the user's: config.user_errors_exit, in-process -----


@pytest.mark.parametrize("error", [
    ValueError("PBTConfig.interval must be >= 1, got 0"),
    FileNotFoundError("gin config x.gin does not exist"),
    PermissionError("--train_log_dir=/x is not writable"),
    SyntaxError("Unable to parse value."),
    RuntimeError("Required bindings for `PopulationTrainer` not provided in "
                 "config: ['task_mixture']\n  In call to configurable"),
    checkpoint.IncompatibleCheckpointError("ckpt: checkpoint leaf a != b"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, error):
  with pytest.raises(SystemExit) as exit_info:
    with config.user_errors_exit():
      raise error
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == f"error: {str(error).splitlines()[0]}\n"


@pytest.mark.parametrize("error", [
    RuntimeError("Attempted to add a new configurable after the config was "
                 "locked."),
    TypeError("unsupported operand"), KeyError("k"), ZeroDivisionError()])
def test_other_exceptions_keep_their_traceback(capsys, error):
  with pytest.raises(type(error)):
    with config.user_errors_exit():
      raise error
  assert capsys.readouterr().err == ""


def test_a_missing_required_binding_is_a_user_error():
  @gin.configurable("needs_a_value")
  def needs_a_value(value=gin.REQUIRED):
    return value

  try:
    gin.clear_config()
    with pytest.raises(RuntimeError) as raised:
      needs_a_value()
    assert config.is_user_error(raised.value)
  finally:
    gin.clear_config()
