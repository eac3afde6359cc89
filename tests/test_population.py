"""The population trainer: vmapped step == per-member loop, PBT on real state,
divergence handling, start-up validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learned_optimization.learned_optimizers import mlp_lopt
from learned_optimization.optimizers import base as opt_base
from learned_optimization.outer_trainers import truncation_schedule
from learned_optimization.tasks import quadratics

from lopt_selftrain import (
  checkpoint,
  compat,
  config,
  data_stream,
  evaluation,
  pbt,
  population,
  rounds,
  tasks,
  training,
)
from lopt_selftrain.self_update import SelfUpdate
from lopt_selftrain.tasks import TaskMixture

N = 3


def _trainer(outer_opt=None, teacher="self", population_size=N, family=None,
             **pbt_kwargs):
  return population.PopulationTrainer(
      learned_opt=mlp_lopt.MLPLOpt(step_mult=0.1, compute_summary=False),
      task_mixture=TaskMixture([family or quadratics.FixedDimQuadraticFamily(4)]),
      outer_opt=outer_opt or SelfUpdate(step_scale=0.01),
      population_size=population_size, teacher=teacher,
      estimator=population.EstimatorConfig(
          num_tasks=2, trunc_length=5, steps_per_jit=5,
          trunc_sched=truncation_schedule.ConstantTruncationSchedule(20)),
      pbt_config=pbt.PBTConfig(interval=2, **pbt_kwargs),
      eval_config=evaluation.EvalConfig(num_tasks=2, num_steps=8),
      seed=3, num_meta_steps=6)


def _member(tree, i):
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def _assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


@pytest.mark.parametrize("outer,teacher", [("self", "self"), ("self", "best"),
                                           ("adam", "self")])
def test_vmapped_population_step_equals_per_member_loop(outer, teacher):
  outer_opt = opt_base.Adam(1e-3) if outer == "adam" else SelfUpdate(
      step_scale=0.01)
  trainer = _trainer(outer_opt, teacher)
  state = trainer.init()
  state = state.replace(meta_loss=jnp.array([3.0, 1.0, 2.0]))  # best = 1
  new_state, losses = trainer.step(state)

  est = trainer.estimators[0]
  _, k_est, _ = jax.random.split(state.key, 3)
  keys = jax.random.split(k_est, N)
  thetas = trainer.thetas(state)
  for i in range(N):
    theta_i = _member(thetas, i)
    weights = compat.worker_weights(theta_i, state.step)
    out, _ = est.compute_gradient_estimate(
        weights, keys[i], _member(state.estimator_states[0], i),
        with_summary=False)
    np.testing.assert_allclose(losses[i], out.mean_loss, rtol=2e-5)
    outer_i = _member(state.outer_opt_state, i)
    if outer == "adam":
      expected = trainer.outer_opt.update(outer_i, out.grad, loss=out.mean_loss)
    else:
      teacher_theta = _member(thetas, 1) if teacher == "best" else theta_i
      expected = trainer.outer_opt.update(outer_i, out.grad, loss=out.mean_loss,
                                          teacher_theta=teacher_theta)
    _assert_trees_close(trainer.outer_opt.get_params(expected),
                        _member(trainer.thetas(new_state), i))
  assert int(new_state.step) == 1 and bool(new_state.healthy.all())


def test_population_steps_on_a_data_family(data_dir):
  """A family with data steps under both lo versions, its batches drawn on the
  host through the counting iterators (so a resumed run can seek to them).
  On lo HEAD, whose `get_datas` stacks with numpy, drawing inside the jitted
  step failed (quadratics, which have no data, did not show it)."""
  family = tasks.MaskedMLPFamily(
      tasks.mnist1d_datasets(batch_size=8, data_dir=data_dir), max_width=4,
      min_width=2, max_depth=1)
  trainer = _trainer(family=family)
  state = trainer.init()
  for _ in range(2):
    state, losses = trainer.step(state)
  assert int(state.step) == 2 and bool(state.healthy.all())
  assert np.all(np.isfinite(np.asarray(losses)))
  assert data_stream.positions([family])[0]["train"] > 0


def test_members_start_different_and_outer_optimizer_is_learned():
  trainer = _trainer()
  thetas = trainer.thetas(trainer.init())
  assert any(not np.allclose(w[0], w[1])
             for w in jax.tree_util.tree_leaves(thetas))
  assert trainer.outer_optimizer_name == "learned"
  assert trainer.outer_opt.learned_opt is trainer.learned_opt


def _poison(state, members):
  """NaN into the weights of `members` (as a diverged self-update would)."""
  outer = state.outer_opt_state
  mask = jnp.zeros(N, bool).at[jnp.asarray(members)].set(True)

  def nan_rows(x):
    return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x)

  thetas = jax.tree_util.tree_map(nan_rows, outer.lopt_state.params)
  return state.replace(outer_opt_state=outer.with_theta(thetas))


def _at_round(state, interval=2):
  """`state` moved to the first step where a PBT round selects."""
  return state.replace(step=jnp.asarray(interval, jnp.int32))


def _evaluating_to(trainer, monkeypatch, meta_loss):
  """The trainer's evaluation gives `meta_loss` (one task family)."""
  meta_loss = jnp.asarray(meta_loss)
  monkeypatch.setattr(trainer, "evaluate",
                      lambda state: (meta_loss, meta_loss[None]))


def test_nan_member_is_flagged_and_replaced_by_a_healthy_copy():
  trainer = _trainer(exploit_fraction=0.0)
  state, _ = trainer.step(_poison(trainer.init(), [1]))
  np.testing.assert_array_equal(state.healthy, [True, False, True])
  state = _at_round(state)
  result = rounds.pbt_round(trainer, state, rounds.without_unrolls(state))
  assert not np.isfinite(result.meta_loss[1])
  new_state, events = result.state, result.events
  assert [(e["member"], e["reason"]) for e in events] == [(1, "nonfinite")]
  donor = events[0]["copied_from"]
  _assert_trees_close(_member(trainer.thetas(new_state), 1),
                      _member(trainer.thetas(state), donor), rtol=0, atol=0)
  assert bool(new_state.healthy.all())


def test_exploit_copies_weights_and_optimizer_state_then_explores_scale(
    monkeypatch):
  trainer = _trainer(exploit_fraction=0.34)  # one of three members
  _evaluating_to(trainer, monkeypatch, [0.5, 0.1, 0.9])
  state = _at_round(trainer.init())
  result = rounds.pbt_round(trainer, state, rounds.without_unrolls(state))
  new_state, events = result.state, result.events
  assert events == [{"step": 2, "member": 2, "copied_from": 1,
                     "reason": "exploit"}]
  _assert_trees_close(_member(trainer.thetas(new_state), 2),
                      _member(trainer.thetas(state), 1), rtol=0, atol=0)
  _assert_trees_close(_member(new_state.estimator_states, 2),
                      _member(state.estimator_states, 1), rtol=0, atol=0)
  scale = np.asarray(new_state.outer_opt_state.step_scale)
  assert scale[0] == scale[1] == pytest.approx(0.01)
  assert scale[2] in (pytest.approx(0.008), pytest.approx(0.0125))


@pytest.mark.parametrize("enabled,expected", [
    (True, [0.0025, 0.005, 0.01, 0.02, 0.04]), (False, [0.01] * 5)])
def test_members_start_on_a_step_scale_ladder_only_with_pbt(enabled, expected):
  trainer = _trainer(population_size=5, enabled=enabled,
                     initial_step_scale_spread=4.0)
  np.testing.assert_allclose(trainer.init().outer_opt_state.step_scale,
                             expected, rtol=1e-6)


def test_step_scale_ladder_outside_the_range_fails_at_construction():
  with pytest.raises(ValueError, match=r"scales 0.0025..0.04 .* outside"):
    _trainer(initial_step_scale_spread=4.0, step_scale_range=(0.005, 1.0))


def test_all_members_diverged_restores_last_good_population(tmp_path,
                                                            monkeypatch):
  trainer = _trainer()
  real_step = trainer.step

  def step(state, step=None):
    state, loss = real_step(state, step)
    if int(state.step) == 3:  # every member diverges after step 3
      state, _ = real_step(_poison(state, [0, 1, 2]))
      state = state.replace(step=jnp.asarray(3, jnp.int32))
    return state, loss

  monkeypatch.setattr(trainer, "step", step)
  final = training.train(trainer, str(tmp_path), max_meta_steps=6,
                      run_config=config.RunConfig(checkpoint_interval=2,
                                                  keep_checkpoints=4))
  records = checkpoint.read(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [0, 2, 4, 6]
  restore = [e for r in records for e in r["pbt_events"]
             if e["reason"] == "restore"]
  assert restore == [{"step": 4, "member": -1, "copied_from": 2,
                      "reason": "restore"}]
  for leaf in jax.tree_util.tree_leaves(trainer.thetas(final)):
    assert np.all(np.isfinite(leaf))

  # The population of step 4 is the last good one of step 2, bit for bit:
  # weights and outer optimizer state (self-update scales included).
  ckpt_dir = str(tmp_path / "checkpoints")
  target = rounds.checkpoint_target(trainer.init())
  good, _ = checkpoint.restore(ckpt_dir, 2, target)
  restored, meta = checkpoint.restore(ckpt_dir, 4, target)
  for tree in (restored["population"], restored["last_good"]):
    _assert_trees_close(tree.outer_opt_state,
                        good["population"].outer_opt_state, rtol=0, atol=0)
  assert int(restored["population"].step) == 4
  assert int(restored["last_good"].step) == 2
  assert (meta["restores"], meta["restores_in_a_row"]) == (1, 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"population_size": 1}, "population_size must be >= 2"),
    ({"teacher": "oracle"}, "teacher must be one of"),
])
def test_bad_trainer_values_fail_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _trainer(**kwargs)
