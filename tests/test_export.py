"""Exported optimizer files, the lo/optax loaders, the export and evaluate apps."""

import os
import pathlib
import re
import shutil

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY_RUN
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.learned_optimizers import mlp_lopt
from test_architectures import ARCHITECTURES, class_path, skip_unless_available

from lopt_selftrain import checkpoint, config, export, heldout, members, training
from lopt_selftrain.apps import evaluate as evaluate_app
from lopt_selftrain.apps import export as export_app
from lopt_selftrain.population import PopulationTrainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
MLP_SPEC = export.LearnedOptSpec.of(mlp_lopt.MLPLOpt, step_mult=0.1,
                                    compute_summary=False)
ADAM_SPEC = export.LearnedOptSpec.of(lopt_base.LearnableAdam, initial_lr=0.01,
                                     use_summary=False)


def _write(path, spec, seed=0, provenance=None):
  theta = spec.build().init(jax.random.PRNGKey(seed))
  export.write(str(path), spec, theta, provenance or {"source": "test"})
  return theta


def _mlp_problem():
  """A small flax MLP regression: (loss_fn, initial params)."""
  model = nn.Sequential([nn.Dense(16), nn.tanh, nn.Dense(1)])
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
  y = jnp.sin(x.sum(axis=1, keepdims=True))
  params = model.init(jax.random.PRNGKey(1), x)
  return jax.jit(lambda p: jnp.mean((model.apply(p, x) - y) ** 2)), params


def optax_step(tx, loss_fn):
  """One jitted optax training step of `tx` on `loss_fn`, passing the loss
  (learned optimizers may read it)."""
  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, loss=loss)
    return optax.apply_updates(params, updates), state
  return step


def _assert_trees_close(a, b, **tolerance):
  jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(x, y, **tolerance), a, b)


@pytest.mark.parametrize("spec", [MLP_SPEC, ADAM_SPEC], ids=["mlp_lopt", "adam"])
def test_optax_matches_lo_optimizer_step_by_step(tmp_path, spec):
  path = tmp_path / "opt.lopt"
  _write(path, spec)
  lo_opt = export.load_lo_optimizer(str(path))
  tx = export.load_optax(str(path), num_steps=10)
  loss_fn, params = _mlp_problem()
  lo_state = lo_opt.init(params, num_steps=10)
  tx_state = tx.init(params)
  lo_update = jax.jit(lambda s, g, loss: lo_opt.update(s, g, loss=loss))
  tx_update = jax.jit(lambda g, s, p, loss: tx.update(g, s, p, loss=loss))
  for _ in range(10):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    lo_state = lo_update(lo_state, grads, loss)
    updates, tx_state = tx_update(grads, tx_state, params, loss)
    params = optax.apply_updates(params, updates)
    # p + (new - p) rounds once: equal to float32 precision.
    _assert_trees_close(params, lo_opt.get_params(lo_state), rtol=1e-6, atol=1e-7)
  assert int(tx_state.iteration) == 10


def test_file_round_trips(tmp_path):
  path = tmp_path / "sub" / "opt.lopt"
  provenance = {"run_dir": "gs://b/run", "step": 3, "member": 1,
                "meta_loss": 0.5, "lineage": [{"step": 2, "member": 1}]}
  theta = _write(path, MLP_SPEC, seed=3, provenance=provenance)
  exported = export.read(str(path))
  assert exported.spec == MLP_SPEC
  assert exported.provenance == provenance
  assert isinstance(exported.learned_opt, mlp_lopt.MLPLOpt)
  assert exported.learned_opt._step_mult == 0.1
  jax.tree_util.tree_map(np.testing.assert_array_equal, exported.theta, theta)
  assert os.listdir(path.parent) == ["opt.lopt"]  # No temp file left behind.
  # The stored gin text alone rebuilds the same spec.
  assert export.LearnedOptSpec.from_gin(MLP_SPEC.class_path,
                                        MLP_SPEC.to_gin()) == MLP_SPEC


def test_damaged_files_give_one_line_errors(tmp_path):
  path = tmp_path / "opt.lopt"
  _write(path, MLP_SPEC)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(export.ExportError, match=r"corrupt \(sha256 mismatch\)"):
    export.read(str(path))
  path.write_bytes(b"PK\x03\x04 not ours")
  with pytest.raises(export.ExportError, match="not an exported learned optimizer"):
    export.read(str(path))
  with pytest.raises(export.ExportError, match="does not exist"):
    export.read(str(tmp_path / "missing.lopt"))


def test_write_refuses_weights_that_do_not_fit(tmp_path):
  theta = MLP_SPEC.build().init(jax.random.PRNGKey(0))
  wrong = export.LearnedOptSpec.of(mlp_lopt.MLPLOpt, hidden_size=8)
  with pytest.raises(export.ExportError, match="do not fit"):
    export.write(str(tmp_path / "opt.lopt"), wrong, theta, {})
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_round_trips_through_load_optax(tmp_path, name):
  """Export -> load_optax, jitted, takes the steps lo's own optimizer takes
  eagerly (the reference: for RNNMLPLOpt lo's compiled update is NaN, see
  compat.jit_safe), on a flax MLP; the loss moves and stays finite."""
  skip_unless_available(name)
  spec = export.LearnedOptSpec.from_gin(class_path(name),
                                        "\n".join(ARCHITECTURES[name][1]))
  path = tmp_path / f"{name}.lopt"
  theta = _write(path, spec, seed=1)
  tx = export.load_optax(str(path), num_steps=5)
  lo_opt = spec.build().opt_fn(theta)  # lo's, not wrapped
  loss_fn, params = _mlp_problem()
  tx_state, lo_state = tx.init(params), lo_opt.init(params, num_steps=5)

  tx_step = optax_step(tx, loss_fn)

  initial = float(loss_fn(params))
  for _ in range(5):
    loss, grads = jax.value_and_grad(loss_fn)(lo_opt.get_params(lo_state))
    lo_state = lo_opt.update(lo_state, grads, loss=loss)
    params, tx_state = tx_step(params, tx_state)
    _assert_trees_close(params, lo_opt.get_params(lo_state), rtol=1e-4,
                        atol=1e-6)
  final = float(loss_fn(params))
  assert np.isfinite(final) and final != initial


def test_load_optax_trains_a_flax_mlp(tmp_path):
  path = tmp_path / "adam.lopt"
  _write(path, ADAM_SPEC)
  tx = optax.chain(optax.clip_by_global_norm(10.0), export.load_optax(str(path)))
  loss_fn, params = _mlp_problem()
  state = tx.init(params)

  step = optax_step(tx, loss_fn)

  initial = float(loss_fn(params))
  for _ in range(200):
    params, state = step(params, state)
  assert float(loss_fn(params)) < 0.2 * initial


def _readme_example() -> str:
  """The README's code block between the example markers."""
  text = (ROOT / "README.md").read_text()
  match = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*"
                    r"<!-- example:end -->", text, re.S)
  assert match, "README.md lost its <!-- example:start/end --> block"
  return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
  """The README example with a self-trained member (the shipped one, exported
  from a self-training run), not a hand-designed rule wrapped by lo."""
  shipped = ROOT / "lopt_selftrain" / "pretrained" / "selftrained_demo_mlp.lopt"
  assert export.read(str(shipped)).spec.class_name.endswith("MLPLOpt")
  (tmp_path / "optimizer.lopt").write_bytes(shipped.read_bytes())
  monkeypatch.chdir(tmp_path)
  exec(compile(_readme_example(), "README example", "exec"), {})
  final = float(re.search(r"final training loss: (\S+)", capsys.readouterr().out)[1])
  # The example's initial loss is 1.76; this member reaches 0.103 (2026-11-26).
  assert final < 0.2


def test_member_lineage_follows_copies_and_restores():
  events = [
      {"step": 10, "member": 1, "copied_from": 0, "reason": "exploit"},
      {"step": 10, "member": 2, "copied_from": 1, "reason": "exploit"},
      {"step": 20, "member": 0, "copied_from": 2, "reason": "nonfinite"},
      {"step": 30, "member": -1, "copied_from": 10, "reason": "restore"},
      {"step": 40, "member": 3, "copied_from": 0, "reason": "exploit"},
  ]
  # 3 <- 0 at 40; population restored to step 10's; 0 untouched at <= 10.
  assert members.member_lineage(events, 3) == [events[3], events[4]]
  # Without the restore: 0 <- 2 at 20, then 2 <- 1 at 10 (pre-round weights).
  assert members.member_lineage(events[:3], 0) == [events[1], events[2]]
  # The restored population of step 10 already had 1 <- 0.
  assert members.member_lineage(events, 1) == [events[0], events[3]]


def test_export_from_a_real_run(tiny_run, tmp_path):
  log_dir, meta_loss, thetas = tiny_run
  out = str(tmp_path / "best.lopt")
  provenance = members.export_run(log_dir, out)
  best = int(np.argmin(meta_loss))
  assert provenance["member"] == best
  assert provenance["step"] == 2
  assert provenance["meta_loss"] == pytest.approx(float(meta_loss[best]))
  assert provenance["lineage"] == []
  exported = export.read(out)
  assert exported.spec.kwargs["hidden_size"] == 8
  assert exported.spec.kwargs["step_mult"] == 0.1
  jax.tree_util.tree_map(lambda t, x: np.testing.assert_array_equal(t, x[best]),
                         exported.theta, thetas)
  # The file alone drives training; no gin config or run dir is read.
  gin.clear_config()
  loss_fn, params = _mlp_problem()
  tx = export.load_optax(out)
  updates, _ = jax.jit(tx.update)(jax.grad(loss_fn)(params), tx.init(params),
                                  params, loss=loss_fn(params))
  assert all(np.isfinite(u).all() for u in jax.tree_util.tree_leaves(updates))


def test_run_dir_saved_under_old_names_exports_and_resumes(tiny_run, tmp_path):
  """A run dir whose config says `num_outer_steps` (before the rename) still
  exports, and resumes without counting the rename as a config change."""
  log_dir, meta_loss, _ = tiny_run
  old = tmp_path / "old_run"
  shutil.copytree(log_dir, old)
  saved = old / config.OPERATIVE_CONFIG
  text = saved.read_text()
  assert "PopulationTrainer.num_meta_steps" in text
  saved.write_text(text.replace("PopulationTrainer.num_meta_steps",
                                "PopulationTrainer.num_outer_steps"))
  provenance = members.export_run(str(old), str(tmp_path / "old.lopt"))
  assert provenance["meta_loss"] == pytest.approx(float(np.min(meta_loss)))
  gin.clear_config()
  config.parse([], [TINY_RUN])
  trainer = PopulationTrainer()
  config.RunConfig()
  # Same config under the new name: resumes at step 2 (the run's end) with
  # no recorded change; a change would raise RunDirError or save a file.
  state = training.train(trainer, str(old),
                         config_text=gin.operative_config_str())
  assert int(state.step) == 2
  assert not list(old.glob("operative_config.resumed_at_*"))
  gin.clear_config()


def _run_app(cli, capsys, *args):
  """(exit code, stderr) of an app's `cli` that is expected to fail."""
  with pytest.raises(SystemExit) as exit_info:
    cli(*args)
  return exit_info.value.code, capsys.readouterr().err.strip()


def test_export_app(tiny_run, tmp_path, capsys):
  log_dir, meta_loss, _ = tiny_run
  out = str(tmp_path / "x.lopt")
  export_app.cli(log_dir, out, 0)
  assert capsys.readouterr().out == (f"exported member 0 of step 2 (meta-loss "
                                     f"{meta_loss[0]:.4g}) to {out}\n")
  assert export.read(out).provenance["member"] == 0
  os.remove(out)
  # Errors: one line, exit status 2, nothing written.
  code, err = _run_app(export_app.cli, capsys, log_dir, out, 2)
  assert code == 2 and err == ("error: --member=2 is out of range: the "
                               "population has 2 members (0..1)")
  code, err = _run_app(export_app.cli, capsys, str(tmp_path / "nope"), out, None)
  assert code == 2 and err.startswith("error: run dir") and "\n" not in err
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / config.OPERATIVE_CONFIG).write_text(
      (pathlib.Path(log_dir) / config.OPERATIVE_CONFIG).read_text())
  code, err = _run_app(export_app.cli, capsys, str(tmp_path / "empty"), out, None)
  assert code == 2 and err.endswith("holds no checkpoint")
  assert not os.path.exists(out)
  gin.clear_config()


def test_export_app_writes_every_member_of_every_step(tiny_run, tmp_path,
                                                     capsys):
  """--all_members: kilobyte member files per checkpoint step that read back
  as the run's population (thetas, meta-losses, provenance)."""
  log_dir, meta_loss, thetas = tiny_run
  saved = checkpoint.list_steps(f"{log_dir}/checkpoints")
  assert len(saved) >= 2
  out = str(tmp_path / "members")
  export_app.cli(log_dir, out, None, True, ["all"])
  assert capsys.readouterr().out == (
      f"exported 2 members of step(s) {', '.join(map(str, saved))} to {out}\n")
  for step in saved:
    population = members.load_population(f"{out}/step_{step:09d}")
    assert population.step == step and len(population.meta_loss) == 2
    assert [p["member"] for p in population.provenances] == [0, 1]
    assert all(p["run_dir"] == log_dir for p in population.provenances)
  last = members.read_population(f"{out}/step_{saved[-1]:09d}")
  np.testing.assert_array_equal(last.meta_loss, meta_loss)
  _assert_trees_close(last.thetas, thetas, rtol=0, atol=0)
  first = members.load_populations(log_dir, [saved[0]])[0]
  _assert_trees_close(members.read_population(f"{out}/step_{saved[0]:09d}").thetas,
                      first.thetas, rtol=0, atol=0)
  # Errors: one line, exit status 2.
  for args, message in [
      ((None, True, ["7"]), f"has no checkpoint of step(s) [7]; it has {saved}"),
      ((None, True, ["x"]), "--steps must be 'all' or whole numbers, got x"),
      ((None, False, ["all"]), "--steps needs --all_members"),
      ((0, True, []), "--member and --all_members exclude each other")]:
    code, err = _run_app(export_app.cli, capsys, log_dir,
                         str(tmp_path / "x"), *args)
    assert code == 2 and err.startswith("error:") and err.endswith(message)
  code, err = _run_app(export_app.cli, capsys, f"{out}/step_{saved[0]:09d}",
                       str(tmp_path / "x"), None, True, ["0"])
  assert code == 2 and "exported members of one step" in err
  gin.clear_config()


def test_evaluate_compares_with_adam(tmp_path, capsys):
  path = str(tmp_path / "adam.lopt")
  _write(path, ADAM_SPEC)
  out_dir = tmp_path / "eval"
  text = heldout.evaluate_family(
      export.read(path), heldout.task_family("quadratic"), "quadratic",
      steps=30, out_dir=str(out_dir), adam_lrs=[1e-3, 1e-2, 1e-1])
  assert (out_dir / "results.md").read_text() == text
  assert (out_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
  rows = {r.split("|")[1].strip(): r.split("|")[2:]
          for r in text.splitlines()[4:] if r.startswith("| ")}
  assert [k.replace("**", "").replace(" (best Adam)", "") for k in rows] == [
      "learned", "Adam lr=0.001", "Adam lr=0.01", "Adam lr=0.1"]
  assert sum(k.endswith("(best Adam)") for k in rows) == 1
  # The exported LearnableAdam(lr=0.01) is that Adam: same tasks, same curve.
  adam_001 = next(v for k, v in rows.items() if "lr=0.01" in k)
  assert rows["learned"] == adam_001
  code, err = _run_app(evaluate_app.cli, capsys, path, "nope", 10, None, 1, 0,
                       ["1e-3"])
  assert code == 2 and err == ("error: unknown task 'nope'; known tasks: "
                               "mnist1d_mlp, quadratic")


def test_rebuild_ignores_the_processes_gin_bindings(tmp_path, clean_gin):
  """A file whose spec lacks an argument (added after it was written) gets
  the Python default, not what this process's gin config binds: loading
  several runs binds one run's settings globally (apps.select)."""
  from lopt_selftrain.nominal_lopt import NominalMLPLOpt  # pylint: disable=g-import-not-at-top
  spec = export.LearnedOptSpec.of(NominalMLPLOpt, hidden_size=4)
  path = str(tmp_path / "nominal.lopt")
  export.write(path, spec, spec.build().init(jax.random.PRNGKey(0)), {"step": 0})
  gin.parse_config("NominalMLPLOpt.param_feature = False\n"
                   "NominalMLPLOpt.hidden_size = 8")
  assert not NominalMLPLOpt().param_feature  # gin applies to plain calls ...
  rebuilt = export.read(path).learned_opt
  assert rebuilt.param_feature and rebuilt.hidden_size == 4  # ... not to files.
