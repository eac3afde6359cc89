r"""absl app: everything a lent GPU should measure, in one budgeted command.

  python launch/no_tensorflow.py lopt_selftrain.apps.gpu_run --out_dir=DIR \
      [--seconds=540] [--tiny]          (launch/gpu_run.sh wraps this)

Phases, each its own process with its own deadline (`budget.run_phases`):
  throughput  population step time for P = 8, 32, 64, 128 (until memory
              fails), the same inner work as ONE fused lo learner and as 8
              sequential lo learners, XLA's compiled cost against the device's
              peaks, peak device memory (`scaling.population_scaling`);
  compare     self-training + PBT vs Adam outer-training (lr grid) from the
              GPU config, advanced in rounds so every arm has the same number
              of meta steps when the deadline comes; each round ends in a
              checkpoint, so a rerun resumes; then `compare.compare` writes its
              figures and tables for the steps reached;
  heldout     the self-trained optimizer (best member of selftrain_pbt) is
              exported and evaluated with
              `lopt_selftrain.apps.evaluate --suite=heldout`.
summary.json / summary.md in --out_dir are rewritten after every measurement
and phase (`gpu_report`), so whenever the budget ends they are complete.
--tiny shrinks the configs (gin_configs/gpu/tiny_cpu.gin) for a CPU test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags

# The runner process only waits for the phases: it imports nothing that could
# touch the accelerator (config and the trainers are imported by the phases).
from lopt_selftrain import budget, gpu_report

FLAGS = flags.FLAGS
PHASES = (("throughput", 0.3), ("compare", 0.55), ("heldout", 0.15))
TINY_BINDING = "include 'gin_configs/gpu/tiny_cpu.gin'"
SELFTRAIN_ARM = "selftrain_pbt"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUNNER = os.path.join(REPO_ROOT, "launch", "no_tensorflow.py")


def define_flags() -> None:
  flags.DEFINE_string("out_dir", None, "Output directory (everything goes here).")
  flags.DEFINE_float("seconds", 540.0, "Time budget of the whole run.")
  flags.DEFINE_float("start_time", None, "Unix time the budget started "
                     "(launch/gpu_run.sh passes its own start; default: now).")
  flags.DEFINE_bool("tiny", False, "CPU test sizes (gin_configs/gpu/tiny_cpu.gin).")
  flags.DEFINE_string("gin_config", "gin_configs/gpu/selftrain_gpu.gin",
                      "Self-training config of every phase.")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra bindings, every phase.")
  flags.DEFINE_list("populations", ["8", "32", "64", "128"],
                    "Population sizes of the throughput phase (tiny: 2,4).")
  flags.DEFINE_integer("throughput_steps", 10, "Timed steps per measurement.")
  flags.DEFINE_list("adam_outer_lrs", ["3e-3", "1e-2"],
                    "Learning rates of the Adam outer-trained arms.")
  flags.DEFINE_list("adam_inner_lrs", ["1e-3", "1e-2"],
                    "Hand-designed Adam lrs of compare's held-out curves.")
  flags.DEFINE_integer("chunk_steps", 0, "Meta steps per arm per round "
                       "(0: twice the PBT interval).")
  flags.DEFINE_integer("max_meta_steps", None, "Stop the arms here even if "
                       "time is left (default: the config's num_meta_steps; "
                       "tiny: 8).")
  flags.DEFINE_integer("heldout_tasks", 8, "compare's held-out tasks per family.")
  flags.DEFINE_integer("heldout_steps", 200, "compare's held-out inner steps.")
  flags.DEFINE_enum("phase", None, [p for p, _ in PHASES],
                    "Internal: run one phase (the runner passes it).")
  flags.DEFINE_float("phase_seconds", None, "Internal: the phase's deadline.")


def settings() -> dict[str, Any]:
  """The run's settings from the flags (--tiny shrinks sizes)."""
  tiny = FLAGS.tiny
  return {
      "gin_config": FLAGS.gin_config,
      "bindings": list(FLAGS.gin_bindings) + ([TINY_BINDING] if tiny else []),
      "populations": ([2, 4] if tiny and FLAGS["populations"].using_default_value
                      else sorted(int(p) for p in FLAGS.populations)),
      "throughput_steps": 3 if tiny else FLAGS.throughput_steps,
      "throughput_max_seconds": 2.0 if tiny else 10.0,
      "ceilings": (1 << 22, 128) if tiny else (1 << 30, 8192),
      "adam_outer_lrs": list(FLAGS.adam_outer_lrs),
      "adam_inner_lrs": list(FLAGS.adam_inner_lrs),
      "chunk_steps": FLAGS.chunk_steps,
      "max_meta_steps": FLAGS.max_meta_steps or (8 if tiny else None),
      "heldout_tasks": 2 if tiny else FLAGS.heldout_tasks,
      "heldout_steps": 8 if tiny else FLAGS.heldout_steps,
      "suite_steps_scale": 0.01 if tiny else 1.0,
      # tiny: two tasks (at 1% of the steps the suite is mostly compiling).
      "suite_tasks": ["digits_mlp", "iris_mlp"] if tiny else [],
      "tiny": tiny,
  }


def _build(s: dict[str, Any], bindings: Sequence[str] = ()):
  from lopt_selftrain import config  # noqa: PLC0415
  from lopt_selftrain.population import PopulationTrainer  # noqa: PLC0415
  config.parse([s["gin_config"]], list(s["bindings"]) + list(bindings))
  return PopulationTrainer()


def _reporter(out_dir: str, phase: str):
  """Writes a phase's result and the summary; returns the writer."""
  def report(result: dict[str, Any]) -> None:
    budget.write_json(os.path.join(out_dir, "phases", f"{phase}.json"), result)
    gpu_report.write_summary(out_dir)
  return report


def throughput(out_dir: str, deadline: budget.Deadline, s: dict[str, Any]
               ) -> None:
  import jax  # noqa: PLC0415

  from lopt_selftrain import benchmark, scaling  # noqa: PLC0415
  report = _reporter(out_dir, "throughput")
  trainer = _build(s)

  def with_machine(result: dict[str, Any]) -> None:
    report(dict(result, machine=benchmark.machine(), jax=jax.__version__))

  scaling.population_scaling(
      trainer, s["populations"], deadline, with_machine,
      steps=s["throughput_steps"], max_seconds=s["throughput_max_seconds"],
      ceilings=tuple(s["ceilings"]))


def _arm_steps(log_dir: str) -> int:
  from lopt_selftrain import checkpoint  # noqa: PLC0415
  steps = checkpoint.list_steps(os.path.join(log_dir, "checkpoints"))
  return max(steps) if steps else 0


def compare_arms(out_dir: str, deadline: budget.Deadline, s: dict[str, Any]
                 ) -> None:
  """Trains the arms in rounds of `chunk` steps each until the next round
  would pass the deadline (less the time kept for compare's report)."""
  import gin  # noqa: PLC0415

  from lopt_selftrain import compare, config, training  # noqa: PLC0415
  report = _reporter(out_dir, "compare")
  arms_dir = os.path.join(out_dir, "compare", "arms")
  arms = {}
  for name, bindings in compare.arms(s["adam_outer_lrs"], with_no_pbt=False):
    trainer = _build(s, bindings)
    log_dir = os.path.join(arms_dir, name)
    compare.claim_arm_dir(log_dir, gin.config_str())
    # train saves it on a fresh start (export needs it) and checks it on resume.
    arms[name] = (trainer, log_dir, config.RunConfig(),
                  gin.operative_config_str())
  chunk = s["chunk_steps"] or 2 * trainer.pbt_config.interval
  cap = min(trainer.num_meta_steps, s["max_meta_steps"] or math.inf)
  result = {"chunk_steps": chunk, "rounds": [], "arms": {}}
  # compare's report recompiles evaluation and held-out curves: keep ~15%.
  keep = 0.15 * deadline.left()
  round_s = None
  while True:
    steps = {name: _arm_steps(arm[1]) for name, arm in arms.items()}
    result["arms"] = gpu_report.arm_summaries(arms_dir, list(arms))
    report(result)
    target = max(steps.values())
    target = target if min(steps.values()) < target else target + chunk
    if target > cap or not deadline.allows(
        None if round_s is None else 1.1 * round_s + keep):
      break
    start = time.monotonic()
    for trainer, log_dir, run_config, text in arms.values():
      training.train(trainer, log_dir, max_meta_steps=target,
                  run_config=run_config, config_text=text)
    round_s = time.monotonic() - start
    result["rounds"].append({"to_step": target, "seconds": round(round_s, 1)})
  reached = min(steps.values())
  if reached == 0:
    return
  result["report"] = "writing"
  report(result)
  compare.compare(os.path.join(out_dir, "compare"), base_config=s["gin_config"],
                  extra_bindings=s["bindings"], meta_steps=reached,
                  adam_outer_lrs=s["adam_outer_lrs"],
                  adam_inner_lrs=s["adam_inner_lrs"],
                  heldout_tasks=s["heldout_tasks"],
                  heldout_steps=s["heldout_steps"], throughput_steps=0,
                  with_no_pbt=False)
  result["report"] = "compare/results.json"
  report(result)


def heldout(out_dir: str, deadline: budget.Deadline, s: dict[str, Any]) -> None:
  from lopt_selftrain import members  # noqa: PLC0415
  report = _reporter(out_dir, "heldout")
  arm_dir = os.path.join(out_dir, "compare", "arms", SELFTRAIN_ARM)
  if not _arm_steps(arm_dir):
    report({"status": "skipped: no self-trained checkpoint"})
    return
  path = os.path.join(out_dir, "selftrained.lopt")
  result: dict[str, Any] = {"optimizer": path,
                            "provenance": members.export_run(arm_dir, path)}
  suite_dir = os.path.join(out_dir, "heldout")
  command = [sys.executable, RUNNER, "lopt_selftrain.apps.evaluate", "--suite=heldout",
             f"--optimizer={path}", f"--out_dir={suite_dir}",
             f"--steps_scale={s['suite_steps_scale']}"]
  if s["suite_tasks"]:
    command.append(f"--tasks={','.join(s['suite_tasks'])}")
  result.update(status="running", command=" ".join(command[1:]))
  report(result)
  with open(os.path.join(out_dir, "logs", "heldout_suite.log"), "w") as log:
    try:
      rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                          timeout=max(1.0, deadline.left()),
                          check=False).returncode
      result["status"] = "done" if rc == 0 else f"error (exit {rc})"
    except subprocess.TimeoutExpired:
      result["status"] = "stopped: phase deadline"
  result["files"] = (sorted(os.listdir(suite_dir)) if os.path.isdir(suite_dir)
                     else [])
  result["suite"] = budget.read_json(os.path.join(suite_dir, "heldout.json"))
  report(result)


def orchestrate(out_dir: str, seconds: float) -> None:
  """Runs the phases as processes of this app, then writes the summary."""
  import jax  # noqa: PLC0415
  # This process only waits: it must not take the accelerator's memory.
  jax.config.update("jax_platforms", "cpu")
  os.makedirs(out_dir, exist_ok=True)
  budget.write_json(os.path.join(out_dir, "settings.json"), dict(
      settings(), budget_s=seconds,
      command=" ".join(["lopt_selftrain.apps.gpu_run", *sys.argv[1:]])))
  # Children share a compilation cache (reruns, repeated programs).
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(out_dir, "jax_cache"))
  argv = [sys.executable, RUNNER, "lopt_selftrain.apps.gpu_run", *sys.argv[1:]]
  spent = time.time() - (FLAGS.start_time or time.time())  # imports, wheels
  budget.run_phases(
      out_dir, [(name, share, [*argv, f"--phase={name}"])
                for name, share in PHASES],
      seconds - spent, on_change=lambda: gpu_report.write_summary(out_dir))
  gpu_report.write_summary(out_dir)
  print(open(os.path.join(out_dir, gpu_report.MARKDOWN)).read())


PHASE_FUNCTIONS = {"throughput": throughput, "compare": compare_arms,
                   "heldout": heldout}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  problem = ("--out_dir is required" if not FLAGS.out_dir else
             f"--seconds must be > 0, got {FLAGS.seconds}"
             if FLAGS.seconds <= 0 else None)
  if problem:
    from lopt_selftrain import config  # noqa: PLC0415
    config.exit_with_error(ValueError(problem))
  if FLAGS.phase is None:
    orchestrate(FLAGS.out_dir, FLAGS.seconds)
    return
  # Stop starting work a little before the runner's kill.
  seconds = FLAGS.phase_seconds or FLAGS.seconds
  deadline = budget.Deadline(seconds - max(2.0, 0.05 * seconds))
  PHASE_FUNCTIONS[FLAGS.phase](FLAGS.out_dir, deadline, settings())


if __name__ == "__main__":
  define_flags()
  app.run(main)
