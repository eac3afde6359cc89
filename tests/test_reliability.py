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

from lopt_selftrain import checkpoint, config, train

INTERVAL = 3  # PBTConfig.interval = RunConfig.checkpoint_interval, tiny config
STEPS = 150  # a few seconds of training per process once compiled
BINDINGS = apprun.MNIST1D_BINDINGS + (
    f"PopulationTrainer.num_outer_steps = {STEPS}",)
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
                                   train.checkpoint_target(trainer.init()))


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
      f"PopulationTrainer.num_outer_steps = {NONFINITE_STEPS}")


def _poison_rows(tree, members, value, when=True):
  """`value` in every leaf of `members` (leading axis = member) where `when`."""
  def poison(x):
    rows = jnp.zeros(x.shape[0], bool).at[jnp.asarray(members)].set(True)
    rows = rows & when
    return jnp.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), value, x)
  return jax.tree_util.tree_map(poison, tree)


def _inject_into_weights(trainer, monkeypatch, members, value):
  """Members' weights become `value` just before step POISON_STEP."""
  real_step = trainer.step

  def step(state, step=None):
    if int(state.step) == POISON_STEP:
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

  def poisoned(weights, keys, states):
    out, summary = estimate(weights, keys, states)
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
  final = train.train(small_trainer, str(tmp_path),
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
