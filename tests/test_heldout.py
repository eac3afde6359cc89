"""The held-out suite: tasks, paired runs against tuned Adam, and its app path."""

import json
import math

import jax
import numpy as np
import pytest
from learned_optimization.learned_optimizers import base as lopt_base

from lopt_selftrain import export, heldout
from lopt_selftrain.apps import evaluate
from lopt_selftrain.tasks import heldout as heldout_tasks

ADAM_SPEC = export.LearnedOptSpec.of(lopt_base.LearnableAdam, initial_lr=0.01,
                                     use_summary=False)
KEYS = {"task", "steps", "learned_final", "adam_final", "adam_best_lr", "ratio"}


@pytest.fixture(scope="module")
def adam_file(tmp_path_factory):
  """An exported 'learned' optimizer that is Adam at lr 0.01."""
  path = str(tmp_path_factory.mktemp("lopt") / "adam.lopt")
  export.write(path, ADAM_SPEC, ADAM_SPEC.build().init(jax.random.PRNGKey(0)),
               {"source": "test", "step": 0, "member": 0})
  return path


def test_suite_is_large_enough_and_held_out():
  names = [t.name for t in heldout_tasks.SUITE]
  assert len(names) >= 6 and len(set(names)) == len(names)
  assert {"digits_mlp", "digits_conv", "digits_mlp_wide_deep"} <= set(names)
  assert min(t.steps for t in heldout_tasks.SUITE) >= 1000  # >= 10x the demo's 100
  with pytest.raises(ValueError, match="unknown heldout task"):
    heldout_tasks.suite_tasks(["digits_mlp", "mnist1d"])


@pytest.mark.parametrize("spec", heldout_tasks.SUITE, ids=lambda s: s.name)
def test_every_task_builds_and_its_loss_is_finite(spec):
  task = spec.build()
  params = task.init(jax.random.PRNGKey(0))
  batch = () if task.datasets is None else next(task.datasets.train)
  loss, grad = jax.value_and_grad(task.loss)(params, jax.random.PRNGKey(1), batch)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))


def test_sklearn_splits_are_disjoint_and_standardised():
  (x, y), (x_test, y_test) = heldout_tasks.sklearn_arrays("digits")
  assert x.shape[1:] == (8, 8, 1) and len(y) + len(y_test) == 1797
  np.testing.assert_allclose(x.reshape(len(x), -1).mean(0), 0, atol=1e-4)
  rows = {r.tobytes() for r in x.reshape(len(x), -1)}
  assert sum(r.tobytes() in rows for r in x_test.reshape(len(x_test), -1)) < 5


def test_tiny_suite_writes_json_md_png(adam_file, tmp_path, capsys):
  out = tmp_path / "suite"
  evaluate.cli(adam_file, None, 0, str(out), 1, 0, ["1e-2", "1e-1"], "heldout",
               ["iris_mlp", "quadratic100_cond1e4"], 0.02)
  records = json.loads((out / "heldout.json").read_text())
  assert [r["task"] for r in records] == ["iris_mlp", "quadratic100_cond1e4"]
  for r in records:
    assert KEYS <= set(r)
    assert r["steps"] == round(0.02 * {"iris_mlp": 1000}.get(r["task"], 2000))
    assert r["adam_best_lr"] in (0.01, 0.1)
    assert math.isclose(r["ratio"], r["learned_final"] / r["adam_final"])
    # The exported optimizer IS Adam at lr 0.01: same init, batches, curve.
    assert math.isclose(r["learned_final"], r["adam_finals"]["0.01"],
                        rel_tol=1e-5)
  assert "learned_test_accuracy" in records[0]
  assert "learned_test_accuracy" not in records[1]
  md = (out / "heldout.md").read_text()
  assert capsys.readouterr().out == md + "\n"
  assert "| iris_mlp | 20 |" in md and "| quadratic100_cond1e4 | 40 |" in md
  assert (out / "heldout_curves.png").read_bytes().startswith(b"\x89PNG")


def test_bad_suite_input_is_one_error_line(adam_file, tmp_path, capsys):
  for args, message in [
      (("heldout", ["nope"], 1.0), "unknown heldout task(s) ['nope']"),
      (("other", [], 1.0), "unknown --suite 'other'"),
      (("validation", ["digits_mlp"], 1.0), "unknown validation task(s)"),
      (("heldout", [], 0.0), "need steps_scale > 0"),
  ]:
    with pytest.raises(SystemExit) as info:
      evaluate.cli(adam_file, None, 0, str(tmp_path / "x"), 1, 0, ["1e-2"],
                   *args)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and message in err
    assert "\n" not in err


def test_summary_counts_targets():
  records = [{"ratio": 0.5, "learned_diverged": False},
             {"ratio": 1.5, "learned_diverged": False},
             {"ratio": math.nan, "learned_diverged": True}]
  s = heldout.summary(records)
  assert (s["at_most_1x"], s["at_most_2x"], s["diverged"]) == (1, 2, 1)
  assert s["median_ratio"] == 1.5 and s["max_ratio"] == math.inf


def test_ratio_where_tuned_adam_reaches_exactly_zero():
  assert heldout.ratio(2e-6, 4e-6) == 0.5
  assert heldout.ratio(2e-6, 0.0) == math.inf  # not NaN: a loss, not a failure
  assert heldout.ratio(0.0, 0.0) == 1.0
  assert math.isnan(heldout.ratio(math.nan, 0.0))
  assert math.isnan(heldout.ratio(math.nan, 1e-3))


def test_comparison_markdown_has_medians():
  def recs(*ratios):
    return [{"task": f"t{i}", "ratio": r, "learned_diverged": False}
            for i, r in enumerate(ratios)]

  text = heldout.comparison_markdown({"self": recs(1.0, 3.0, 2.0),
                                      "adam_outer": recs(4.0, 5.0, 6.0)})
  assert "| t1 | 3 | 5 |" in text
  assert text.splitlines()[-1] == "| **median** | **2** | **5** |"
