"""The validation suite and choosing a member on it (never on the test suite)."""

import json

import jax
import numpy as np
import pytest
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.tasks import base as tasks_base

from lopt_selftrain import export, heldout, members, selection
from lopt_selftrain.apps import evaluate, select
from lopt_selftrain.tasks import heldout as heldout_tasks


def test_validation_suite_is_apart_from_the_test_suite():
  names = [t.name for t in heldout_tasks.VALIDATION]
  assert len(names) >= 5 and len(set(names)) == len(names)
  assert not set(names) & {t.name for t in heldout_tasks.SUITE}
  assert heldout_tasks.suite_tasks(["val_tabgen_wide"], suite="validation")
  with pytest.raises(ValueError, match="unknown validation task"):
    heldout_tasks.suite_tasks(["digits_mlp"], suite="validation")
  with pytest.raises(ValueError, match="unknown suite"):
    heldout_tasks.suite_tasks(suite="test")


@pytest.fixture(scope="module")
def suite_datasets():
  """Names of the datasets the test suite (SUITE) trains on."""
  tasks = [spec.build() for spec in heldout_tasks.SUITE]
  return {t.datasets.extra_info["name"] for t in tasks if t.datasets is not None}


@pytest.mark.parametrize("spec", heldout_tasks.VALIDATION, ids=lambda s: s.name)
def test_every_validation_task_builds_without_held_out_data(spec,
                                                            suite_datasets):
  assert suite_datasets == {"digits", "breast_cancer", "wine", "iris"}
  task = spec.build()
  if task.datasets is not None:
    assert task.datasets.extra_info["name"] not in suite_datasets
  params = task.init(jax.random.PRNGKey(0))
  batch = () if task.datasets is None else next(task.datasets.train)
  loss, grad = jax.value_and_grad(task.loss)(params, jax.random.PRNGKey(1), batch)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))


def test_diabetes_terciles_are_three_balanced_overlapping_classes():
  (x, y), (x_test, y_test) = heldout_tasks.sklearn_arrays("diabetes_terciles")
  assert x.shape[1] == 10 and len(y) + len(y_test) == 442
  counts = np.bincount(np.concatenate([y, y_test]))
  assert len(counts) == 3 and counts.min() >= 145
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)


def _adam_population(lrs):
  """A 'population' of plain Adams, one member per lr."""
  adam, thetas = heldout.adam_thetas(lrs)
  spec = export.LearnedOptSpec.of(lopt_base.LearnableAdam, use_summary=False)
  return members.Population("adams", adam, spec, thetas, 0,
                           np.zeros(len(lrs)), [], "learned")


def test_members_are_ranked_against_tuned_adam_on_shared_batches():
  """A member that is Adam at a grid lr scores exactly that lr's final loss
  over the best one (same init, batches and keys); the far-too-small lr
  loses; it misses 2x there, the grid lr does not, and is not chosen."""
  specs = heldout_tasks.suite_tasks(["val_tabgen_tiny", "val_quadratic30_cond1e3"],
                                    suite="validation")
  population = _adam_population([1e-6, 3e-2])
  records = selection.validation_records([population], specs, steps_scale=0.05,
                                         adam_lrs=[3e-2, 1e-1])
  assert [r["task"] for r in records] == [s.name for s in specs]
  for record in records:
    tiny, grid_lr = record["ratios"][0]
    assert tiny > 1.0
    if record["adam_best_lr"] == 3e-2:
      assert grid_lr == pytest.approx(1.0, rel=1e-6)
    else:
      assert grid_lr >= 1.0
  assert selection.choose(records) == (0, 1)
  misses, median, geo = selection.scores(records)[0][1]
  assert misses == sum(r["ratios"][0][1] > 2.0 for r in records)
  assert median == pytest.approx(np.median([r["ratios"][0][1] for r in records]))
  assert geo >= 1.0


def test_choice_counts_tasks_beyond_2x_before_the_median():
  """A member far ahead on most tasks but 50x behind on one loses to one
  within 2x everywhere; among equal counts the lower median wins, then the
  lower geometric mean; a diverged (inf) or NaN ratio counts as a miss."""
  records = [{"ratios": [[0.1, 1.5, 0.1, 0.1]]}, {"ratios": [[0.1, 1.5, 3.0, 0.1]]},
             {"ratios": [[50.0, 1.5, 0.2, np.inf]]}]
  assert [s[0] for s in selection.scores(records)[0]] == [1, 0, 1, 1]
  assert selection.choose(records) == (0, 1)
  records[2]["ratios"][0][1] = 2.5  # Now every member misses once.
  assert selection.choose(records) == (0, 0)  # Median 0.1; member 3's geo is inf.
  records[0]["ratios"][0][1] = np.nan
  assert selection.scores(records)[0][1][0] == 2


def test_select_app_exports_the_chosen_member(tiny_run, tmp_path, capsys):
  log_dir, _, thetas = tiny_run
  out, out_dir = tmp_path / "best.lopt", tmp_path / "val"
  select.cli([log_dir], str(out), str(out_dir), ["val_quadratic30_cond1e3"],
             0.05, [0], ["1e-2"])
  report = json.loads((out_dir / "validation.json").read_text())
  assert report["runs"] == [log_dir]
  member = report["chosen"]["member"]
  ratios = report["tasks"][0]["ratios"][0]
  assert len(ratios) == 2 and ratios[member] == min(ratios)
  assert "| **" in (out_dir / "validation.md").read_text()
  exported = export.read(str(out))
  assert exported.provenance["member"] == member
  assert "val_quadratic30_cond1e3" in exported.provenance["selected_by"]
  jax.tree_util.tree_map(
      lambda t, x: np.testing.assert_array_equal(t, x[member]),
      exported.theta, thetas)
  assert f"exported member {member}" in capsys.readouterr().out


def test_select_app_reads_exported_members(tiny_run, tmp_path, capsys):
  """A directory of member files (apps.export --all_members) is chosen from
  like its run; the chosen file keeps the run's provenance."""
  log_dir, _, _ = tiny_run
  member_dir = str(tmp_path / "members")
  members.export_population(members.load_population(log_dir), member_dir)
  out = tmp_path / "best.lopt"
  select.cli([log_dir, member_dir], str(out), str(tmp_path / "val"),
             ["val_quadratic30_cond1e3"], 0.05, [0], ["1e-2"])
  ratios = json.loads((tmp_path / "val" / "validation.json").read_text()
                      )["tasks"][0]["ratios"]
  assert ratios[0] == ratios[1]  # The same members, the same batches.
  provenance = export.read(str(out)).provenance
  assert provenance["run_dir"] == log_dir and "selected_by" in provenance
  capsys.readouterr()


def test_select_app_without_a_run_is_a_one_line_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    select.cli([], str(tmp_path / "x.lopt"), str(tmp_path))
  assert exit_info.value.code != 0
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and "\n" not in err


def test_evaluate_app_runs_the_validation_suite(tmp_path):
  """`evaluate --suite=validation` writes validation.json/.md/_curves.png."""
  path = str(tmp_path / "adam.lopt")
  spec = export.LearnedOptSpec.of(lopt_base.LearnableAdam, initial_lr=0.01,
                                  use_summary=False)
  export.write(path, spec, spec.build().init(jax.random.PRNGKey(0)),
               {"source": "test", "step": 0, "member": 0})
  out = tmp_path / "val"
  evaluate.cli(path, None, 0, str(out), 1, 0, ["1e-2"], "validation",
               ["val_quadratic30_cond1e3"], 0.02)
  records = json.loads((out / "validation.json").read_text())
  assert [r["task"] for r in records] == ["val_quadratic30_cond1e3"]
  assert records[0]["ratio"] == pytest.approx(1.0)  # Adam 1e-2 vs Adam 1e-2.
  assert (out / "validation.md").exists() and (out / "validation_curves.png").exists()


def test_duplicate_members_are_trained_once_and_scored_alike():
  """PBT copies: members 0 and 2 are one weight set, evaluated once."""
  thetas = {"a": np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]),
            "b": np.array([0.0, 0.0, 0.0])}
  assert selection._distinct(thetas) == ([0, 1], [0, 1, 0])
  population = _adam_population([3e-2, 1e-6, 3e-2])
  specs = heldout_tasks.suite_tasks(["val_quadratic30_cond1e3"], suite="validation")
  ratios = selection.validation_records([population], specs, 0.02,
                                        adam_lrs=[3e-2])[0]["ratios"][0]
  assert ratios[0] == ratios[2] == pytest.approx(1.0) and ratios[1] > 1.0


def test_each_draw_is_a_record_of_its_own():
  """Two seeds: a record per task and draw (other inits, so other Adam
  finals), each counted by the scores and named by its seed in the table."""
  population = _adam_population([1e-6, 3e-2])
  specs = heldout_tasks.suite_tasks(["val_quadratic30_cond1e3"], suite="validation")
  records = selection.validation_records([population], specs, 0.02,
                                         seeds=[0, 1], adam_lrs=[3e-2])
  assert [(r["task"], r["seed"]) for r in records] == [
      ("val_quadratic30_cond1e3", 0), ("val_quadratic30_cond1e3", 1)]
  assert records[0]["adam_final"] != records[1]["adam_final"]
  assert [s[0] for s in selection.scores(records)[0]] == [2, 0]
  assert ("val_quadratic30_cond1e3 s0 | val_quadratic30_cond1e3 s1"
          in selection.markdown([population], records, (0, 1)))


def test_a_run_converged_to_zero_still_ranks():
  """Adam reaching exactly 0 would make every ratio inf; finals are floored
  at float32's smallest normal, so members still differ."""
  finals = selection._finals(*_zero_loss_setup())
  assert finals[0] == np.finfo(np.float32).tiny  # Underflowed to 0, floored.
  assert np.all(np.isfinite(finals)) and finals[0] < finals[1]


def _zero_loss_setup():
  """Two Adams on a 1-d quadratic for 2000 steps: lr 0.1 underflows to 0."""
  population = _adam_population([1e-1, 1e-4])
  task = heldout_tasks.QuadraticTask(1, 1.0)
  family = tasks_base.single_task_to_family(task, name="q1")
  return population.learned_opt, population.thetas, family, (), 2000, 0
