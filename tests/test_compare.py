"""A tiny version of the comparison command produces every documented output."""

import json
import os

import pytest

from lopt_selftrain import compare, report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "PopulationTrainer.population_size = 2",
    "EstimatorConfig.num_tasks = 2",
    "EstimatorConfig.trunc_length = 5",
    "EstimatorConfig.steps_per_jit = 5",
    "ConstantTruncationSchedule.total_length = 10",
    "PBTConfig.interval = 2",
    "EvalConfig.num_tasks = 2",
    "EvalConfig.num_steps = 4",
    # The data-free quadratic family alone keeps this test's compile time low.
    "TaskMixture.families = [@demo_quad/FixedDimQuadraticFamily()]",
    "TaskMixture.weights = [1.0]",
    "TaskMixture.names = ['quadratic10']",
]


def test_tiny_compare_writes_figures_and_tables(tmp_path):
  out = str(tmp_path / "cmp")
  results = compare.compare(
      out, os.path.join(REPO, "gin_configs", "selftrain_cpu_demo.gin"), TINY,
      meta_steps=2, adam_outer_lrs=["1e-3"], adam_inner_lrs=["1e-2"],
      heldout_tasks=2, heldout_steps=5, throughput_steps=1)
  for name in ("figure_meta_loss.png", "figure_inner_curves.png",
               "results.md", "results.json"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  assert set(saved["arms"]) == {"selftrain_pbt", "selftrain_no_pbt",
                                "adam_outer_lr1e-3"}
  assert saved["tuned_adam_outer_arm"] == "adam_outer_lr1e-3"
  for arm in saved["arms"].values():
    assert {"final_best_meta_loss", "final_median_meta_loss",
            "last_best_meta_loss", "last_median_meta_loss",
            "lowest_best_meta_loss",
            "steps_to_tuned_adam_outer_final",
            "improvement_per_100_steps", "acceleration", "wall_time_s",
            "heldout_final_loss"} <= set(arm)
    assert set(arm["heldout_final_loss"]) == {"quadratic10"}
    # Rounds at steps 0 and 2 (interval 2): the final value is the last
    # round's (10% of 2 rounds is one).
    assert arm["final_best_meta_loss"] == arm["last_best_meta_loss"]
  assert saved["arms"]["adam_outer_lr1e-3"][
      "steps_to_tuned_adam_outer_final"] is not None
  assert set(saved["adam_inner_eval_meta_loss"]) == {"1e-2"}
  assert 0 < saved["adam_inner_eval_meta_loss"]["1e-2"] < 1.0  # Adam learns
  throughput = saved["throughput"]
  assert throughput["population_size"] == 2
  assert [f["family"] for f in throughput["families"]] == ["quadratic10"]
  assert throughput["mixture"]["speedup"] == pytest.approx(
      throughput["families"][0]["speedup"])
  with open(os.path.join(out, "results.md")) as f:
    md = f.read()
  assert "selftrain_pbt" in md and "Throughput" in md


def test_tiny_compare_over_seeds_writes_each_seed_and_the_summary(tmp_path):
  out = str(tmp_path / "seeds")
  summary = compare.compare_seeds(
      out, [3, 4], TINY,
      base_config=os.path.join(REPO, "gin_configs", "selftrain_cpu_demo.gin"),
      meta_steps=2, adam_outer_lrs=["1e-3"], adam_inner_lrs=["1e-2"],
      heldout_tasks=2, heldout_steps=5, throughput_steps=0, with_no_pbt=False)
  for seed in (3, 4):
    with open(os.path.join(out, f"seed_{seed}", "results.json")) as f:
      saved = json.load(f)
    assert saved["bindings"][-2] == f"PopulationTrainer.seed = {seed}"
    assert set(saved["arms"]) == {"selftrain_pbt", "adam_outer_lr1e-3"}
  with open(os.path.join(out, "seeds.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  assert set(summary["seeds"]) == {3, 4}
  # Different seeds evaluate different tasks.
  assert (summary["seeds"][3]["final_best"] != summary["seeds"][4]["final_best"])
  assert os.path.getsize(os.path.join(out, "seeds.md")) > 0


def test_steps_to_reach_and_improvement_rates():
  records = [{"step": s, "best_meta_loss": v, "median_meta_loss": v}
             for s, v in [(0, 1.0), (100, 0.9), (200, 0.5), (300, 0.1)]]
  assert compare.steps_to_reach(records, 0.5) == 200
  assert compare.steps_to_reach(records, 0.01) is None
  rates = compare.improvement_per_window(records)
  assert rates == pytest.approx([0.10536, 0.58779, 1.60944], rel=1e-4)
  halves = compare.improvement_per_window(records, window=200)
  assert halves == pytest.approx([0.69315, 3.21888], rel=1e-4)  # per window
  assert compare.acceleration(rates) == pytest.approx(1.60944 / 0.10536, rel=1e-4)
  assert compare.acceleration([0.5, 0.1, None]) == pytest.approx(0.2)
  assert compare.acceleration([None, 0.1, 0.2]) is None


def test_final_is_the_mean_of_the_last_tenth_of_the_rounds():
  values = [1.0] * 16 + [0.8, 0.6, 0.5, 0.3]
  records = [{"best_meta_loss": v} for v in values]
  assert compare.final(records) == pytest.approx(0.4)  # last 2 of 20
  records[-1]["best_meta_loss"] = None  # a round with no finite member
  assert compare.final(records) is None
  assert compare.final(records[:-1]) == pytest.approx(0.55)


def _arm(final, lowest, steps=None, accel=2.0):
  return {"final_best_meta_loss": final, "lowest_best_meta_loss": lowest,
          "last_best_meta_loss": final, "acceleration": accel,
          "steps_to_tuned_adam_outer_final": steps}


def test_seed_summary_counts_reached_seeds_and_averages():
  results = {
      1: {"tuned_adam_outer_arm": "adam_outer_lr1e-2",
          "arms": {"selftrain_pbt": _arm(0.5, 0.49, steps=300),
                   "adam_outer_lr1e-2": _arm(0.52, 0.51, steps=600, accel=0.5)}},
      0: {"tuned_adam_outer_arm": "adam_outer_lr3e-3",
          "arms": {"selftrain_pbt": _arm(0.6, 0.55, accel=None),
                   "adam_outer_lr3e-3": _arm(0.54, 0.53, steps=500)}},
  }
  summary = compare.seed_summary(results)
  assert list(summary["seeds"]) == [0, 1]
  assert summary["reached"] == 1
  assert summary["seeds"][0]["tuned_adam_outer_final_best"] == 0.54
  assert summary["mean"]["final_best"] == pytest.approx(0.55)
  assert summary["mean"]["tuned_adam_outer_final_best"] == pytest.approx(0.53)
  assert summary["mean"]["acceleration"] == pytest.approx(2.0)  # None skipped
  md = report.seeds_markdown(summary)
  assert "1 of 2 seeds" in md
  assert md.count("\n| ") == 4  # header, seed 0, seed 1, mean


def test_arm_dir_resumes_only_the_same_config(tmp_path):
  arm = str(tmp_path / "arms" / "selftrain_pbt")
  compare.claim_arm_dir(arm, "A = 1\n")
  compare.claim_arm_dir(arm, "A = 1\n")  # an interrupted run resumes
  compare.claim_arm_dir(  # a longer run extends it
      arm, "A = 1\nPopulationTrainer.num_meta_steps = 900\n")
  with pytest.raises(ValueError, match="holds a run of another config"):
    compare.claim_arm_dir(arm, "A = 2\n")
  with open(os.path.join(arm, compare.ARM_CONFIG)) as f:
    assert f.read() == "A = 1\n"  # the old record is kept
  legacy = tmp_path / "legacy"  # a run from before arm configs were recorded
  legacy.mkdir()
  (legacy / "metrics.jsonl").write_text("{}\n")
  with pytest.raises(ValueError, match="holds a run of another config"):
    compare.claim_arm_dir(str(legacy), "A = 1\n")
