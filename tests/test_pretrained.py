"""Shipped self-trained optimizers: every name loads by name and trains."""

import jax
import jax.numpy as jnp
import pytest
from test_export import optax_step

from lopt_selftrain import export, pretrained


def test_names_resolve_and_paths_pass_through(tmp_path):
  for name in pretrained.PRETRAINED:
    assert pretrained.resolve(name).endswith(f"{name}.lopt")
  other = str(tmp_path / "mine.lopt")
  assert pretrained.resolve(other) == other
  with pytest.raises(ValueError, match="unknown pretrained optimizer 'nope'"):
    pretrained.path("nope")


@pytest.mark.parametrize("name", pretrained.PRETRAINED)
def test_shipped_optimizer_has_provenance_and_trains(name):
  provenance = export.read(pretrained.path(name)).provenance
  for key in ("config", "step", "meta_loss", "device", "date"):
    assert key in provenance, key
  # A least-squares problem it never saw: within the held-out suite's shortest
  # horizon (1000 steps) the loss must fall 10x. (At 200 steps the broad-mix
  # optimizer has only reached 0.58x: it takes small steps;
  # docs/heldout_history.md.)
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 8))
  y = x @ jnp.arange(1.0, 9.0)

  def loss_fn(w):
    return jnp.mean(jnp.square(x @ w - y))

  opt = export.load_optax(name, num_steps=1000)
  params = jnp.zeros(8)
  state = opt.init(params)

  step = optax_step(opt, loss_fn)

  for _ in range(1000):
    params, state = step(params, state)
  assert jnp.isfinite(loss_fn(params))
  assert loss_fn(params) < 0.1 * loss_fn(jnp.zeros(8))


def test_ship_adds_provenance_and_json(tmp_path):
  import json  # pylint: disable=g-import-not-at-top

  from learned_optimization.learned_optimizers import base as lopt_base  # pylint: disable=g-import-not-at-top

  from lopt_selftrain.apps import ship  # pylint: disable=g-import-not-at-top

  spec = export.LearnedOptSpec.of(lopt_base.LearnableAdam, initial_lr=0.01,
                                  use_summary=False)
  src = str(tmp_path / "src.lopt")
  export.write(src, spec, spec.build().init(jax.random.PRNGKey(0)),
               {"step": 7, "meta_loss": 0.5})
  out = ship.ship(src, "adam_test", "c.gin", "2-core CPU", "2026-11-26",
                  str(tmp_path))
  assert out == {"step": 7, "meta_loss": 0.5, "config": "c.gin",
                 "device": "2-core CPU", "date": "2026-11-26"}
  assert json.loads((tmp_path / "adam_test.json").read_text()) == out
  assert export.read(str(tmp_path / "adam_test.lopt")).provenance == out
  with pytest.raises(ValueError, match="identifier"):
    ship.ship(src, "bad name", "c.gin", "cpu", None, str(tmp_path))
