"""launch/gpu_run.sh end to end on CPU at tiny size (the structure of
gin_configs/gpu/ shrunk by tiny_cpu.gin), a budget that ends mid-phase, and
the bookkeeping it rests on (budget, roofline, targets)."""

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import apprun
import gin
import pytest
from learned_optimization.outer_trainers import truncation_schedule

from lopt_selftrain import (
  budget,
  config,
  export,
  gpu_report,
  roofline,
  scaling,
  training,
)
from lopt_selftrain.apps import gpu_run
from lopt_selftrain.population import PopulationTrainer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "gpu_run.sh"
# Generous: phases end when their work is done (minutes on 2 idle cores),
# and each phase's share grows with the budget.
FULL_SECONDS = 1800


def run_script(out_dir: Path, seconds: float, tmp_path_factory, *flags: str
            ) -> tuple[subprocess.CompletedProcess, float]:
  env = apprun.app_env(tmp_path_factory)
  env["PYTHON"] = sys.executable
  env["LOPT_HIDE_TENSORFLOW"] = "1"  # as on the GPU image (and faster imports)
  start = time.monotonic()
  result = subprocess.run(["bash", str(SCRIPT), str(out_dir), str(seconds),
                           "--tiny", *flags], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=seconds + 120)
  return result, time.monotonic() - start


def read_summary(out_dir: Path) -> dict:
  summary = json.loads((out_dir / "summary.json").read_text())
  markdown = (out_dir / "summary.md").read_text()
  assert "## Targets" in markdown and "## Throughput" in markdown
  assert set(summary["targets"]) == {"population_64_vs_8", "population_vs_fused",
                                     "roofline", "long_run"}
  return summary


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("gpu_run") / "out"
  # One population size: every side and the loop correction, without two
  # more compiles of each (the plan over sizes has its own test below).
  result, seconds = run_script(out_dir, FULL_SECONDS, tmp_path_factory,
                               "--populations=2")
  assert result.returncode == 0, result.stderr[-3000:]
  return out_dir, read_summary(out_dir), seconds


def test_every_phase_finishes_with_complete_results(full_run):
  out_dir, summary, _ = full_run
  assert {k: v["status"] for k, v in summary["status"]["phases"].items()} == {
      "throughput": "done", "compare": "done", "heldout": "done"}
  rows = {(r["population_size"], r["side"]): r
          for r in summary["throughput"]["rows"]}
  assert set(rows) == {(2, "population"), (2, "fused_lo"), (2, "sequential_lo")}
  assert all(r["status"] == "ok" and r["seconds_per_step"] > 0
             for r in rows.values())
  pop = rows[(2, "population")]
  # CPU XLA counts a scan body once: the step's cost was corrected upwards.
  assert summary["throughput"]["loop_bodies_counted_once"]
  assert pop["cost"]["loop_correction"]["flops"] > 1.5
  assert pop["cost"]["flops"] > pop["cost"]["reported"]["flops"] > 0
  assert pop["roofline"]["flops_per_s"] > 0
  assert pop["roofline"]["met"] is None  # no peaks for a CPU: "unknown"
  assert summary["targets"]["population_vs_fused"]["value"].keys() == {"2"}


def test_comparison_arms_reach_the_same_step(full_run):
  out_dir, summary, _ = full_run
  arms = summary["compare"]["arms"]
  assert set(arms) == {"selftrain_pbt", "adam_outer_lr3e-3", "adam_outer_lr1e-2"}
  steps = {a["steps"] for a in arms.values()}
  assert len(steps) == 1 and steps.pop() > 0
  results = json.loads((out_dir / "compare" / "results.json").read_text())
  assert set(results["arms"]) == set(arms)
  assert summary["targets"]["long_run"]["met"] in (True, False)


def test_heldout_exports_the_self_trained_optimizer(full_run):
  out_dir, summary, _ = full_run
  heldout = summary["heldout"]
  assert heldout["status"] == "done"
  assert heldout["provenance"]["outer_optimizer"] == "learned"
  # --tiny evaluates two tasks of the suite, at 1% of their steps.
  assert [(r["task"], r["steps"]) for r in heldout["suite"]] == [
      ("digits_mlp", 10), ("iris_mlp", 10)]
  assert {"heldout.json", "heldout.md", "heldout_curves.png"} <= set(heldout["files"])
  export.read(heldout["optimizer"])  # a loadable optimizer file


def test_rerun_skips_finished_phases(full_run, tmp_path_factory):
  out_dir, _, _ = full_run
  result, seconds = run_script(out_dir, 60, tmp_path_factory)
  assert result.returncode == 0, result.stderr[-3000:]
  assert all(p["status"] == "done"
             for p in read_summary(out_dir)["status"]["phases"].values())


def test_budget_ending_mid_phase_leaves_a_valid_summary(tmp_path,
                                                        tmp_path_factory):
  out_dir = tmp_path / "out"
  result, seconds = run_script(out_dir, 30, tmp_path_factory)
  assert result.returncode == 0, result.stderr[-3000:]
  # The budget counts from the script's start; past it only the runner's own
  # exit (and, on a loaded machine, its imports if they alone outlast it).
  assert seconds < 30 + 60
  summary = read_summary(out_dir)
  statuses = [p["status"] for p in summary["status"]["phases"].values()]
  assert "stopped: phase deadline" in statuses
  assert summary["targets"]["population_64_vs_8"]["met"] is None


@pytest.mark.parametrize("name,outer,lopt", [
    ("selftrain_gpu.gin", "learned", "MLPLOpt"),
    ("adam_outer_baseline_gpu.gin", "Adam", "MLPLOpt"),
    ("selftrain_nominal_gpu.gin", "learned", "NominalMLPLOpt")])
def test_gpu_configs_run_two_meta_steps(name, outer, lopt, tmp_path):
  """The GPU configs as they are, shrunk only by tiny_cpu.gin's sizes."""
  try:
    config.parse([str(REPO / "gin_configs" / "gpu" / name)],
                 [gpu_run.TINY_BINDING])
    trainer = PopulationTrainer()
    schedule = trainer.estimator_config.trunc_sched
  finally:
    gin.clear_config()
  assert trainer.outer_optimizer_name == outer
  assert type(trainer.learned_opt).__name__ == lopt
  assert trainer.task_mixture.names == ("mnist1d_mlp128", "quadratic100")
  assert isinstance(schedule, truncation_schedule.LogUniformLengthSchedule)
  state = training.train(trainer, str(tmp_path), max_meta_steps=2,
                      run_config=config.RunConfig())
  assert int(state.step) == 2
  assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1]
                    )["step"] == 2


# --- the bookkeeping, without JAX


PHASE = "import sys, time; time.sleep(float(sys.argv[1])); print('slept')"


def test_run_phases_kills_an_overrunning_phase_and_gives_time_on(tmp_path):
  changes = []
  status = budget.run_phases(
      str(tmp_path), [("quick", 1, [sys.executable, "-c", PHASE, "0"]),
                      ("slow", 1, [sys.executable, "-c", PHASE, "30"])],
      budget_s=6, on_change=lambda: changes.append(1), reserve_s=0)
  quick, slow = status["phases"]["quick"], status["phases"]["slow"]
  assert quick["status"] == "done" and slow["status"] == "stopped: phase deadline"
  assert slow["deadline_s"] > 3  # the quick phase's unused time went on
  assert json.loads((tmp_path / budget.STATUS).read_text()) == status
  assert "slept" in (tmp_path / "logs" / "quick.log").read_text()
  assert len(changes) >= 4


class _FakeScaling:
  """`scaling._Scaling` without JAX: the population runs out of memory from
  P=8 on; lo's learners take 100 s to compile."""

  def __init__(self, trainer, family_index, steps, max_seconds):
    self.peaks, self.loops_counted_once = None, True

  def population(self, size):
    if size >= 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory allocating 1 GB")
    return {"seconds_per_step": 0.01, "first_call_s": 1.0}

  def fused_lo(self, size):
    return {"seconds_per_step": 0.01, "first_call_s": 100.0}

  sequential_lo = fused_lo


def test_population_scaling_plans_rows_and_skips_what_cannot_fit(monkeypatch):
  """The end-to-end run measures one population size; the plan over several
  (population first, then lo's learners; memory and budget skips) is here."""
  monkeypatch.setattr(scaling, "_Scaling", _FakeScaling)
  trainer = types.SimpleNamespace(
      task_mixture=types.SimpleNamespace(names=("quad",)),
      estimator_config=types.SimpleNamespace(num_tasks=2))
  reports = []
  result = scaling.population_scaling(
      trainer, [2, 4, 8, 16], budget.Deadline(50), reports.append, steps=3)
  assert result["family"] == "quad" and reports[-1] is result
  assert [(r["population_size"], r["side"], r["status"]) for r in result["rows"]
          ] == [(2, "population", "ok"), (4, "population", "ok"),
                (8, "population", "out of memory"),
                (16, "population", "skipped: out of memory at a smaller size"),
                (2, "fused_lo", "ok"), (2, "sequential_lo", "ok"),
                # predicted from the P=2 row: 100 s to compile, 50 s left
                (4, "fused_lo", "skipped: budget"),
                (8, "fused_lo", "skipped: budget"),
                (16, "fused_lo", "skipped: budget")]
  assert result["rows"][2]["error"].startswith("RuntimeError: RESOURCE_EXHAUSTED")


def test_write_json_is_strict():
  assert budget._plain({"a": float("nan"), "b": [1.0, float("inf")]}) == {
      "a": None, "b": [1.0, None]}


@pytest.mark.parametrize("kind,matched", [("NVIDIA H200", "H200"),
                                          ("NVIDIA H100 80GB HBM3", "H100"),
                                          ("NVIDIA H100 PCIe", "H100 PCIe"),
                                          ("cpu", None)])
def test_device_peaks(kind, matched):
  peaks = roofline.device_peaks(kind)
  assert (peaks and peaks["matched"]) == matched


def test_judge_picks_the_limit_by_arithmetic_intensity():
  peaks = {"fp32_flops": 60e12, "hbm_bytes": 3e12}  # ridge: 20 FLOP/byte
  memory = roofline.judge(flops=10e12, bytes_=2e12, seconds=1.0, peaks=peaks)
  assert memory["bound"] == "memory" and memory["met"]  # 2/3 of bandwidth
  compute = roofline.judge(flops=12e12, bytes_=0.1e12, seconds=1.0, peaks=peaks)
  assert compute["bound"] == "compute" and not compute["met"]  # 20% of peak
  assert roofline.judge(1.0, 1.0, 1.0, None)["met"] is None


def test_targets_from_rows():
  def row(p, side, seconds):
    return {"population_size": p, "side": side, "status": "ok",
            "seconds_per_step": seconds,
            "roofline": {"met": False, "bound": "memory"}}
  throughput = {"rows": [row(8, "population", 1.0), row(8, "fused_lo", 2.0),
                         row(64, "population", 2.5), row(64, "fused_lo", 2.0),
                         {"population_size": 128, "side": "population",
                          "status": "out of memory"}]}
  compare = {"arms": {"selftrain_pbt": {
      "steps": 50, "tuned_adam_outer_arm": "adam_outer_lr1e-2",
      "steps_to_tuned_adam_outer_final": None}}}
  t = gpu_report.targets(throughput, compare)
  assert t["population_64_vs_8"] == {"value": 2.5, "target": "<= 2", "met": False}
  assert t["population_vs_fused"]["value"] == {8: 0.5, 64: 1.25}
  assert t["population_vs_fused"]["met"] is False
  assert t["roofline"]["population_size"] == 8 and t["roofline"]["met"] is False
  assert t["long_run"]["met"] is False and t["long_run"]["meta_steps"] == 50
  assert gpu_report.targets(None, None)["long_run"]["met"] is None


def test_summary_of_an_empty_directory_is_complete(tmp_path):
  summary = gpu_report.write_summary(str(tmp_path))
  assert json.loads((tmp_path / gpu_report.SUMMARY).read_text()) == summary
  assert all(t["met"] is None for t in summary["targets"].values())
  assert os.path.exists(tmp_path / gpu_report.MARKDOWN)
