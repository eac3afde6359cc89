"""PBT selection, gather, explore and lineage: pure functions, exact checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_selftrain import pbt


def _rng():
  return np.random.default_rng(0)


def test_exploit_copies_exactly_the_bottom_from_the_top():
  meta_loss = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])
  source, replaced = pbt.select(meta_loss, np.ones(8, bool), 0.25, _rng())
  # bottom quarter = members 2 (0.9) and 6 (0.8); top quarter = 1 (0.1), 5 (0.2)
  np.testing.assert_array_equal(np.flatnonzero(replaced), [2, 6])
  assert set(source[[2, 6]]) <= {1, 5}
  keep = ~replaced
  np.testing.assert_array_equal(source[keep], np.flatnonzero(keep))


def test_nonfinite_members_are_always_replaced_even_without_exploit():
  meta_loss = np.array([0.5, np.nan, 0.2, np.inf])
  healthy = np.array([True, True, False, True])  # member 2: NaN gradient
  source, replaced = pbt.select(meta_loss, healthy, 0.0, _rng())
  np.testing.assert_array_equal(replaced, [False, True, True, True])
  np.testing.assert_array_equal(source, [0, 0, 0, 0])  # only 0 is healthy


def test_all_diverged_asks_for_restore():
  source, replaced = pbt.select(np.array([np.nan, 1.0]),
                                np.array([True, False]), 0.5, _rng())
  assert (source == -1).all() and replaced.all()


def test_top_member_is_never_replaced_with_large_fraction():
  meta_loss = np.array([3.0, 1.0, 2.0, 4.0])
  source, replaced = pbt.select(meta_loss, np.ones(4, bool), 0.75, _rng())
  assert not replaced[1] and source[1] == 1
  assert replaced[[0, 2, 3]].all()


def test_gather_moves_whole_members():
  tree = {"w": jnp.arange(12.0).reshape(4, 3), "b": jnp.arange(4)}
  out = pbt.gather(tree, jnp.array([0, 0, 3, 1]))
  np.testing.assert_array_equal(out["w"][1], tree["w"][0])
  np.testing.assert_array_equal(out["b"], [0, 0, 3, 1])


def test_explore_changes_only_replaced_members():
  scale = jnp.ones(4)
  theta = {"w": jnp.ones((4, 5))}
  replaced = jnp.array([False, True, False, True])
  new_scale, new_theta = pbt.explore(scale, theta, replaced,
                                     jax.random.PRNGKey(0), (0.5, 2.0), 0.1)
  np.testing.assert_array_equal(new_scale[jnp.array([0, 2])], [1.0, 1.0])
  assert set(np.asarray(new_scale[jnp.array([1, 3])]).tolist()) <= {0.5, 2.0}
  np.testing.assert_array_equal(new_theta["w"][0], 1.0)
  assert not np.allclose(new_theta["w"][1], 1.0)


def test_explore_without_weight_noise_keeps_weights_identical():
  theta = {"w": jnp.arange(8.0).reshape(2, 4)}
  _, new_theta = pbt.explore(jnp.ones(2), theta, jnp.array([True, True]),
                             jax.random.PRNGKey(1), (0.8, 1.25), 0.0)
  np.testing.assert_array_equal(new_theta["w"], theta["w"])


@pytest.mark.parametrize("factor,expected", [(2.0, [8.0, 4.0, 0.5]),
                                             (0.5, [8.0, 2.0, 0.25])])
def test_explore_clips_perturbed_scale_to_range_but_not_kept_members(
    factor, expected):
  scale = jnp.array([8.0, 4.0, 0.25])
  replaced = jnp.array([False, True, True])
  new_scale, _ = pbt.explore(scale, {"w": jnp.ones((3, 1))}, replaced,
                             jax.random.PRNGKey(2), (factor,), 0.0,
                             step_scale_range=(0.25, 4.0))
  np.testing.assert_array_equal(new_scale, expected)


def test_initial_step_scales_are_a_geometric_ladder_around_the_scale():
  ladder = pbt.PBTConfig(initial_step_scale_spread=4.0).initial_step_scales(
      1.0, 3)
  np.testing.assert_allclose(ladder, [0.25, 1.0, 4.0], rtol=1e-6)
  np.testing.assert_array_equal(pbt.PBTConfig().initial_step_scales(0.5, 2),
                                [0.5, 0.5])


def test_lineage_records_who_copied_whom_and_why():
  events = pbt.lineage_events(
      100, np.array([0, 0, 2, 0]), np.array([False, True, False, True]),
      np.array([True, True, True, False]))
  assert events == [
      {"step": 100, "member": 1, "copied_from": 0, "reason": "exploit"},
      {"step": 100, "member": 3, "copied_from": 0, "reason": "nonfinite"}]


@pytest.mark.parametrize("kwargs", [
    {"exploit_fraction": 1.0}, {"exploit_fraction": -0.1}, {"interval": 0},
    {"explore_factors": ()}, {"weight_noise_std": -1.0},
    {"step_scale_range": (1.0, 1.0)}, {"step_scale_range": (-1.0, 2.0)},
    {"initial_step_scale_spread": 0.5}, {"max_restores_in_a_row": 0}])
def test_bad_config_is_rejected(kwargs):
  with pytest.raises(ValueError, match="PBTConfig"):
    pbt.PBTConfig(**kwargs)
