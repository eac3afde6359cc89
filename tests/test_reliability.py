"""The train app survives what preemptible machines do to it: kill -9 at random
moments, a checkpoint cut short, members whose weights or meta-gradients blow up.

The killed run and the corrupt-checkpoint rerun must end exactly where an
uninterrupted run ends (CPU, same seed: bitwise), so a resume is invisible.
"""

import math
import random
import shutil
import time

import apprun
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from lopt_selftrain import checkpoint, config, rounds, run_dir, training

INTERVAL = 3  # PBTConfig.interval = RunConfig.checkpoint_interval, tiny config
STEPS = 150  # a few seconds of training per process once compiled
BINDINGS = apprun.MNIST1D_BINDINGS + (
    f"PopulationTrainer.num_meta_steps = {STEPS}",)
ROUNDS = list(range(0, STEPS + 1, INTERVAL))
WAIT_S = 600  # for one process to reach a step, on a loaded 2-core machine


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return apprun.app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """Waits for (and returns the log dir of) an uninterrupted run, started in
  the background as soon as the module needs it, so it overlaps the killed run."""
  log_dir = tmp_path_factory.mktemp("reference") / "run"
  output = log_dir.parent / "app"
  proc = apprun.start(apprun.app_command(str(log_dir), bindings=BINDINGS), env,
                      output)

  def wait():
    assert proc.wait(timeout=WAIT_S) == 0, apprun.stderr(output)[-3000:]
    return log_dir

  yield wait
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def trainer():
  """The killed runs' trainer, in-process: gives `restore_latest` its target."""
  return apprun.gin_trainer(*BINDINGS)


def _steps(log_dir):
  return [r["step"] for r in checkpoint.read(str(log_dir / "metrics.jsonl"))]


def _final(log_dir, trainer):
  """(step, tree, metadata) of the newest checkpoint of `log_dir`."""
  return checkpoint.restore_latest(str(log_dir / "checkpoints"),
                                   rounds.checkpoint_target(trainer.init()))


def _assert_bitwise_equal(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert (x.dtype, x.shape) == (y.dtype, y.shape)
    assert x.tobytes() == y.tobytes()


def _assert_same_run(log_dir, reference_dir, trainer):
  """Same metrics and same final checkpoint (population, lineage, data streams)."""
  ours = checkpoint.read(str(log_dir / "metrics.jsonl"))
  theirs = checkpoint.read(str(reference_dir / "metrics.jsonl"))
  for key in ("step", "member_meta_loss", "family_meta_loss", "pbt_events"):
    assert [r[key] for r in ours] == [r[key] for r in theirs], key
  step, tree, meta = _final(log_dir, trainer)
  ref_step, ref_tree, ref_meta = _final(reference_dir, trainer)
  assert step == ref_step == STEPS
  _assert_bitwise_equal(tree, ref_tree)
  assert meta["lineage"] == ref_meta["lineage"]
  assert meta["data_positions"] == ref_meta["data_positions"]


def _wait_for_step(proc, log_dir, step, output):
  """Polls metrics.jsonl until it has a record at `step` or later."""
  deadline = time.monotonic() + WAIT_S
  while not (_steps(log_dir) or [-1])[-1] >= step:
    assert proc.poll() is None, (
        f"exited ({proc.returncode}) before step {step}:\n"
        f"{apprun.stderr(output)[-3000:]}")
    assert time.monotonic() < deadline, f"no step {step} after {WAIT_S} s"
    time.sleep(0.02)


def test_killed_run_resumes_and_ends_like_an_uninterrupted_run(
    tmp_path, env, reference, trainer):
  seed = random.randrange(2**32)
  rng = random.Random(seed)
  log_dir = tmp_path / "run"
  command = apprun.app_command(str(log_dir), bindings=BINDINGS)
  kill_rounds = sorted(rng.sample(range(2, len(ROUNDS) * 2 // 3), 3))
  logged, resumed = -1, None
  for i, kill_round in enumerate(kill_rounds):
    output = tmp_path / f"app{i}"
    proc = apprun.start(command, env, output)
    # Past the stale records of the killed process: this one has logged too.
    _wait_for_step(proc, log_dir, max(ROUNDS[kill_round], logged + INTERVAL),
                   output)
    time.sleep(rng.uniform(0, 0.1))  # mid-step, mid-evaluation or mid-save
    proc.kill()
    proc.wait()
    if resumed is not None:
      assert f"Resumed from checkpoint at step {resumed}." in apprun.stderr(
          output)
    steps = _steps(log_dir)
    assert steps == ROUNDS[:len(steps)], f"seed {seed}: {steps}"
    logged, resumed = steps[-1], checkpoint.list_steps(
        str(log_dir / "checkpoints"))[-1]
    # The next process recomputes logged - resumed steps: at most one interval.
    assert 0 <= logged - resumed <= INTERVAL, f"seed {seed}"

  output = tmp_path / "app_final"
  assert apprun.start(command, env, output).wait(timeout=WAIT_S) == 0, (
      apprun.stderr(output)[-3000:])
  assert f"Resumed from checkpoint at step {resumed}." in apprun.stderr(output)
  assert _steps(log_dir) == ROUNDS
  _assert_same_run(log_dir, reference(), trainer)
  _, _, meta = _final(log_dir, trainer)
  assert meta["data_positions"][1]["train"] > 0  # the MNIST-1D stream moved


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, env, reference, trainer):
  reference_dir = reference()
  log_dir = tmp_path / "run"
  shutil.copytree(reference_dir, log_dir)
  ckpt_dir = str(log_dir / "checkpoints")
  *_, previous, newest = checkpoint.list_steps(ckpt_dir)
  newest_path = checkpoint.checkpoint_path(ckpt_dir, newest)
  with open(newest_path, "r+b") as f:
    f.truncate(f.seek(0, 2) // 2)

  output = tmp_path / "app"
  assert apprun.start(apprun.app_command(str(log_dir), bindings=BINDINGS), env,
                      output).wait(timeout=WAIT_S) == 0
  err = apprun.stderr(output)
  assert f"Skipping corrupt checkpoint {newest_path}" in err
  assert f"Resumed from checkpoint at step {previous}." in err
  assert _steps(log_dir) == ROUNDS
  _assert_same_run(log_dir, reference_dir, trainer)


# ---- non-finite members, in-process ------------------------------------------

NONFINITE_STEPS = 9
POISON_STEP = 4  # between the rounds at steps 3 and 6


@pytest.fixture(scope="module")
def small_trainer():
  """Three members, no exploitation: every PBT event is a divergence event."""
  return apprun.gin_trainer(
      "PopulationTrainer.population_size = 3",
      "PBTConfig.exploit_fraction = 0.0",
      f"PopulationTrainer.num_meta_steps = {NONFINITE_STEPS}")


def _poison_rows(tree, members, value, when=True):
  """`value` in every leaf of `members` (leading axis = member) where `when`."""
  def poison(x):
    rows = jnp.zeros(x.shape[0], bool).at[jnp.asarray(members)].set(True)
    rows = rows & when
    return jnp.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), value, x)
  return jax.tree_util.tree_map(poison, tree)


def _inject_into_weights(trainer, monkeypatch, members, value, every=False):
  """Members' weights become `value` just before step POISON_STEP (`every`:
  and before every later step)."""
  real_step = trainer.step

  def step(state, step=None):
    now = int(state.step)
    if now == POISON_STEP or (every and now > POISON_STEP):
      outer = state.outer_opt_state
      state = state.replace(outer_opt_state=outer.with_theta(
          _poison_rows(trainer.thetas(state), members, value)))
    return real_step(state, step)

  monkeypatch.setattr(trainer, "step", step)


def _inject_into_meta_gradient(trainer, monkeypatch, members, value):
  """Members' meta-gradients of step POISON_STEP become `value`.

  The population step is one jitted call, so the estimator is only traced:
  the poison is selected inside the computation from the outer iteration lo's
  estimator receives (the step number).
  """
  (estimate,) = trainer._estimate  # one task family

  def poisoned(weights, keys, states, datas):
    out, summary = estimate(weights, keys, states, datas)
    now = weights.outer_state.outer_iteration[0]
    return out.replace(grad=_poison_rows(out.grad, members, value,
                                         now == POISON_STEP)), summary

  monkeypatch.setattr(trainer, "_estimate", (poisoned,))
  monkeypatch.setattr(trainer, "_step_fns", {})  # retrace with the poison


def _tensorboard_scalars(log_dir, prefix):
  """{(tag, step): value} of the scalars under `prefix` in log_dir's events."""
  scalars = {}
  for path in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(prefix):
          scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
  return scalars


@pytest.mark.parametrize("inject,value,members", [
    (_inject_into_weights, math.nan, (1,)),
    (_inject_into_weights, math.inf, (0, 2)),
    (_inject_into_weights, -math.inf, (0, 1, 2)),
    (_inject_into_meta_gradient, math.nan, (2,)),
    (_inject_into_meta_gradient, math.inf, (0, 1, 2)),
], ids=["nan-weights-one", "inf-weights-two", "inf-weights-all",
        "nan-grad-one", "inf-grad-all"])
def test_nonfinite_members_are_replaced_and_logged(
    tmp_path, monkeypatch, small_trainer, inject, value, members):
  inject(small_trainer, monkeypatch, members, value)
  final = training.train(small_trainer, str(tmp_path),
                      run_config=config.RunConfig(checkpoint_interval=INTERVAL))

  records = checkpoint.read(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [0, 3, 6, 9]
  events = {r["step"]: r["pbt_events"] for r in records}
  assert events[0] == events[3] == events[9] == []
  everyone = len(members) == small_trainer.population_size
  if everyone:  # nobody to copy from: back to the population of step 3
    assert events[6] == [{"step": 6, "member": -1, "copied_from": 3,
                          "reason": "restore"}]
  else:
    assert [(e["member"], e["reason"]) for e in events[6]] == [
        (m, "nonfinite") for m in members]
    assert all(e["copied_from"] not in members for e in events[6])
  for leaf in jax.tree_util.tree_leaves(small_trainer.thetas(final)):
    assert np.all(np.isfinite(leaf))
  assert bool(final.healthy.all())

  scalars = _tensorboard_scalars(tmp_path, "pbt/")
  assert scalars["pbt/restore", 6] == int(everyone)
  assert scalars["pbt/nonfinite", 6] == (0 if everyone else len(members))
  assert scalars["pbt/nonfinite", 3] == scalars["pbt/restore", 9] == 0

  # Checkpoints 3, 6, 9: the population after round 6 is, bit for bit, the
  # last good population saved at step 3 (weights, self-update scales and the
  # learned optimizer's state); only its step (and fresh unrolls) differ.
  ckpt_dir = str(tmp_path / "checkpoints")
  target = rounds.checkpoint_target(small_trainer.init())
  at_3, _ = checkpoint.restore(ckpt_dir, 3, target)
  at_6, meta = checkpoint.restore(ckpt_dir, 6, target)
  if everyone:
    _assert_bitwise_equal(at_6["population"].outer_opt_state,
                          at_3["population"].outer_opt_state)
    _assert_bitwise_equal(at_6["last_good"], at_3["last_good"])
    assert int(at_6["population"].step) == 6
    assert int(at_6["last_good"].step) == 3
  else:
    assert int(at_6["last_good"].step) == 6
  assert meta["restores"] == int(everyone)


@pytest.fixture(scope="module")
def impatient_trainer():
  """`small_trainer` that stops at the second all-diverged round in a row."""
  return apprun.gin_trainer(
      "PopulationTrainer.population_size = 3",
      "PBTConfig.exploit_fraction = 0.0",
      "PBTConfig.max_restores_in_a_row = 2",
      f"PopulationTrainer.num_meta_steps = {NONFINITE_STEPS}")


def test_population_that_keeps_diverging_stops_and_keeps_what_it_wrote(
    tmp_path, monkeypatch, impatient_trainer):
  _inject_into_weights(impatient_trainer, monkeypatch, (0, 1, 2), math.inf,
                       every=True)
  with pytest.raises(rounds.DeadPopulationError) as raised:
    training.train(impatient_trainer, str(tmp_path),
                run_config=config.RunConfig(checkpoint_interval=INTERVAL))
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(
      "every member diverged 2 PBT round(s) in a row (the last at step 9; "
      "the last good population is of step 3): non-finite weights in 3 of 3 "
      "members (learned optimizer MLPLOpt, self-update scales 0.01..0.01)")
  assert message.endswith(
      f"{tmp_path} keeps the checkpoints and metrics up to step 6: fix the "
      "config and rerun with --allow_config_change to resume from there "
      "(recorded), or --restart to start over")
  # Round 9 wrote nothing; what rounds 0-6 wrote is intact and restores.
  assert _steps(tmp_path) == [0, 3, 6]
  ckpt_dir = str(tmp_path / "checkpoints")
  assert checkpoint.list_steps(ckpt_dir) == [0, 3, 6]
  step, _, meta = _final(tmp_path, impatient_trainer)
  assert (step, meta["restores"], meta["restores_in_a_row"]) == (6, 1, 1)


# ---- the run dir: refused history loss and config drift, in-process ----------

CONFIG = """
# Parameters for PBTConfig:
PBTConfig.exploit_fraction = 0.5
PBTConfig.explore_factors = (0.8, 1.25)
PopulationTrainer.num_meta_steps = 12
PopulationTrainer.task_mixture = %MIX
MIX = @TaskMixture()
TaskMixture.families = \\
    [@a/FixedDimQuadraticFamily(), @b/FixedDimQuadraticFamily()]
"""


def test_config_comparison_reads_bindings_not_text():
  same = CONFIG.replace("(0.8, 1.25)", "(0.8,  1.25)").replace(
      "# Parameters for PBTConfig:", "").replace(
          "\\\n    [", "[")
  assert same != CONFIG and config.changed_bindings(CONFIG, same) == {}
  other = CONFIG.replace("@b/", "@c/").replace("0.5", "0.25") + "X.y = 1\n"
  changes = config.changed_bindings(CONFIG, other)
  assert changes == {
      "PBTConfig.exploit_fraction": ("0.5", "0.25"),
      "TaskMixture.families": (
          "[@a/FixedDimQuadraticFamily(), @b/FixedDimQuadraticFamily()]",
          "[@a/FixedDimQuadraticFamily(), @c/FixedDimQuadraticFamily()]"),
      "X.y": (None, "1")}
  assert config.describe_changes(changes).endswith("X.y: (unset) -> 1")


def _saved_run(tmp_path, steps=(3,)):
  """A run dir as a run of CONFIG leaves it (checkpoints of a tiny tree)."""
  log_dir = tmp_path / "run"
  for step in steps:
    checkpoint.save(str(log_dir / "checkpoints"), step, {"x": np.zeros(2)},
                    {"step": step})
  checkpoint.JsonlLog(str(log_dir / "metrics.jsonl")).append({"step": 0})
  (log_dir / "operative_config.gin").write_text(CONFIG)
  return log_dir


def _snapshot(directory):
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_accepts_a_longer_run_and_records_the_change(tmp_path):
  log_dir = _saved_run(tmp_path)
  target = {"x": np.ones(2)}
  assert run_dir.start(str(log_dir), target, CONFIG).config_change is None
  longer = CONFIG.replace("= 12", "= 20")
  begin = run_dir.start(str(log_dir), target, longer)
  assert begin.restored[0] == 3
  assert begin.config_change == {
      "resumed_at": 3, "file": "operative_config.resumed_at_000000003.gin",
      "bindings": {"PopulationTrainer.num_meta_steps": ["12", "20"]}}
  assert (log_dir / "operative_config.gin").read_text() == CONFIG
  assert (log_dir / begin.config_change["file"]).read_text() == longer
  # The next rerun compares with the accepted change, not the original.
  assert run_dir.start(str(log_dir), target, longer).config_change is None
  before = _snapshot(log_dir)
  with pytest.raises(config.RunDirError, match=r"num_meta_steps: 20 -> 15"):
    run_dir.start(str(log_dir), target, CONFIG.replace("= 12", "= 15"))
  assert _snapshot(log_dir) == before


def test_resume_under_another_config_only_when_allowed(tmp_path):
  log_dir = _saved_run(tmp_path)
  other = CONFIG.replace("0.5", "0.25")
  before = _snapshot(log_dir)
  with pytest.raises(config.RunDirError, match=(
      r"another gin config than this one \(operative_config.gin\): "
      r"PBTConfig.exploit_fraction: 0.5 -> 0.25; nothing was changed")):
    run_dir.start(str(log_dir), {"x": np.ones(2)}, other)
  assert _snapshot(log_dir) == before
  begin = run_dir.start(str(log_dir), {"x": np.ones(2)}, other,
                        allow_config_change=True)
  assert begin.config_change["bindings"] == {
      "PBTConfig.exploit_fraction": ["0.5", "0.25"]}


@pytest.mark.parametrize("history", ["checkpoints", "metrics", "both"])
def test_history_that_does_not_restore_is_refused_then_moved_aside(
    tmp_path, history):
  log_dir = _saved_run(tmp_path, steps=(3, 6))
  if history == "metrics":
    shutil.rmtree(log_dir / "checkpoints")
  else:
    for path in (log_dir / "checkpoints").iterdir():
      path.write_bytes(b"garbage")
  if history == "checkpoints":
    (log_dir / "metrics.jsonl").unlink()
  before = _snapshot(log_dir)
  with pytest.raises(config.RunDirError, match="nothing was changed") as err:
    run_dir.start(str(log_dir), {"x": np.ones(2)}, CONFIG)
  assert ("ckpt_000000006.ckpt" in str(err.value)) == (history != "metrics")
  assert ("metrics record" in str(err.value)) == (history != "checkpoints")
  assert _snapshot(log_dir) == before

  begin = run_dir.start(str(log_dir), {"x": np.ones(2)}, CONFIG, restart=True)
  assert begin.restored is None
  (moved,) = (log_dir / run_dir.PREVIOUS_RUNS).iterdir()
  assert _snapshot(moved) == before  # moved, not deleted
  assert sorted(_snapshot(log_dir)) == sorted(
      ["operative_config.gin"] + [f"{run_dir.PREVIOUS_RUNS}/{moved.name}/{p}"
                                  for p in before])
