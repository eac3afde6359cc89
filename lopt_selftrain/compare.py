r"""The paper's comparison on one machine: self-training vs. Adam outer-training.

  python -m lopt_selftrain.apps.compare --out_dir=runs/compare

Arms, all from the same base gin config (same seed, task mix, estimator,
population size and number of meta steps, hence the same meta-gradient
budget):
  selftrain_pbt      the paper's method: self-update + PBT;
  selftrain_no_pbt   ablation: self-update, members independent;
  adam_outer_lr*     lo's Adam outer update, members independent, one arm per
                     learning rate (the lowest final meta-loss, see
                     `final`, is "tuned").
Then each arm's best member, and hand-designed Adam over an lr grid, train
held-out tasks sampled from the training families with a key never used in
meta-training, and hand-designed Adam's meta-loss on the evaluation tasks is
the reference line of the meta-loss figure. Also measured: population vs.
sequential lo learners throughput on every family of the mix.

Outputs in --out_dir: figure_meta_loss.png, figure_inner_curves.png,
results.md, results.json, and arms/<arm>/ (each arm's full training log).
With --seeds=1,2,... all of that goes to --out_dir/seed_<S> per seed, and
seeds.md / seeds.json compare self-training with each seed's tuned Adam-outer
arm across the seeds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import gin  # noqa: I001
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import (
  benchmark,
  checkpoint,
  config,
  curves,
  evaluation,
  files,
  report,
  training,
)
from lopt_selftrain.population import PopulationTrainer

HELDOUT_SEED = 2**20  # Never used by training or evaluation keys.


def arms(adam_lrs: Sequence[str], with_no_pbt: bool = True
         ) -> list[tuple[str, list[str]]]:
  """(name, gin bindings) of every arm."""
  result = [("selftrain_pbt", [])]
  if with_no_pbt:
    result.append(("selftrain_no_pbt", ["PBTConfig.enabled = False"]))
  for lr in adam_lrs:
    result.append((f"adam_outer_lr{lr}", [
        "PopulationTrainer.outer_opt = @Adam()", f"Adam.learning_rate = {lr}",
        "PBTConfig.enabled = False"]))
  return result


def _build(base_config: str, bindings: Sequence[str]) -> PopulationTrainer:
  gin.clear_config()
  config.parse([base_config], list(bindings))
  return PopulationTrainer()


ARM_CONFIG = "arm_config.gin"


class StaleArmDirError(ValueError):
  """An arm directory holds a run of another config."""


def claim_arm_dir(log_dir: str, config_text: str) -> None:
  """Lets an arm resume only a run of the same gin config.

  An interrupted comparison picks up where it stopped, and a longer one
  (--meta_steps) extends the arms of a shorter one: resumption is exact, and
  the number of meta steps is the one binding allowed to differ. An arm
  directory left by another config (an edited gin file, other flags) would
  otherwise be resumed silently and its stale results reported as new.
  """
  path = os.path.join(log_dir, ARM_CONFIG)
  if os.path.exists(path):
    with open(path) as f:
      changes = config.changed_bindings(f.read(), config_text)
    changes.pop("PopulationTrainer.num_meta_steps", None)
    if not changes:
      return
  elif not os.path.exists(log_dir) or not os.listdir(log_dir):
    os.makedirs(log_dir, exist_ok=True)
    files.write_atomic(path, config_text.encode())
    return
  raise StaleArmDirError(f"{log_dir} holds a run of another config; pass a "
                         "new --out_dir or delete that directory")


def run_arm(base_config: str, bindings: Sequence[str], log_dir: str
            ) -> dict[str, Any]:
  """Trains one arm; returns its metrics and its best member's weights."""
  trainer = _build(base_config, bindings)
  claim_arm_dir(log_dir, gin.config_str())
  state = training.train(trainer, log_dir)
  meta_loss = np.where(np.isfinite(state.meta_loss), state.meta_loss, np.inf)
  best = int(np.argmin(meta_loss))
  records = checkpoint.read(os.path.join(log_dir, "metrics.jsonl"))
  return {
      "trainer": trainer,
      "records": records,
      "best_theta": jax.tree_util.tree_map(lambda x: x[best],
                                           trainer.thetas(state)),
      # The training loop's clock, summed over resumptions of the arm.
      "wall_time_s": records[-1]["wall_time_s"],
  }


def steps_to_reach(records: Sequence[dict[str, Any]], target: float
                   ) -> int | None:
  """First logged step whose best meta-loss is <= target (None: never)."""
  for r in records:
    if r["best_meta_loss"] is not None and r["best_meta_loss"] <= target:
      return r["step"]
  return None


def final(records: Sequence[dict[str, Any]], key: str = "best_meta_loss"
          ) -> float | None:
  """`curves.final_value` of `key` over the records (PBT rounds): less at the
  mercy of one noisy round than the last record. None if any round there had
  no finite value (strict JSON has no nan)."""
  value = curves.final_value([np.nan if r[key] is None else r[key]
                              for r in records])
  return None if np.isnan(value) else value


def lowest(records: Sequence[dict[str, Any]], key: str = "best_meta_loss"
           ) -> float | None:
  """Lowest finite `key` over the run (None if it never was finite)."""
  finite = [r[key] for r in records if r[key] is not None]
  return float(min(finite)) if finite else None


def acceleration(rates: Sequence[float | None]) -> float | None:
  """Fastest later improvement rate / first rate (> 1: the improvement sped up
  after the start); None when the first window did not improve."""
  later = [r for r in rates[1:] if r is not None]
  if rates[0] is None or rates[0] <= 0 or not later:
    return None
  return float(max(later) / rates[0])


def improvement_per_window(records: Sequence[dict[str, Any]],
                           window: int = 100, key: str = "median_meta_loss"
                           ) -> list[float | None]:
  """Decrease of log(meta-loss) in each consecutive `window` meta steps.

  A positive feedback loop shows as later windows improving faster than the
  first one.
  """
  steps = np.array([r["step"] for r in records], float)
  values = np.array([np.nan if r[key] is None else r[key] for r in records])
  rates = []
  for start in np.arange(steps[0], steps[-1], window):
    i = int(np.argmin(np.abs(steps - start)))
    j = int(np.argmin(np.abs(steps - min(start + window, steps[-1]))))
    ok = j > i and values[i] > 0 and values[j] > 0
    rates.append(float(window * (np.log(values[i]) - np.log(values[j]))
                       / (steps[j] - steps[i])) if ok else None)
  return rates


def heldout_curves(trainer: PopulationTrainer,
                   optimizers: dict[str, tuple[lopt_base.LearnedOptimizer, Any]],
                   num_tasks: int, num_steps: int) -> dict[str, dict[str, list]]:
  """Mean training-loss curve per family for each (learned_opt, theta).

  Tasks come from a key no training or evaluation round uses, and batches
  from the datasets' test split, so nothing here was seen in meta-training.
  """
  by_family: dict[str, dict[str, list]] = {}
  key = jax.random.PRNGKey(HELDOUT_SEED + trainer.seed)
  for name, family, family_key in zip(
      trainer.task_mixture.names, trainer.task_mixture.families,
      jax.random.split(key, len(trainer.task_mixture.families))):
    data = evaluation.eval_batches(family, num_tasks, num_steps, split="test")
    by_family[name] = {}
    for opt_name, (learned_opt, theta) in optimizers.items():
      losses = jax.jit(evaluation.inner_losses, static_argnums=(0, 1, 5, 6))(
          learned_opt, family, theta, family_key, data, num_tasks, num_steps)
      by_family[name][opt_name] = np.asarray(jax.numpy.mean(losses, 0)).tolist()
  return by_family


def reference_meta_loss(trainer: PopulationTrainer, lrs: Sequence[str]
                        ) -> dict[str, float]:
  """Meta-loss of hand-designed Adam at each lr on the evaluation tasks of
  `trainer` (the tasks every arm's members are ranked on)."""
  return {lr: float(trainer.evaluate_optimizer(
      lopt_base.learned_optimizer_from_opt(opt_base.Adam(float(lr))),
      jnp.zeros(1))[0][0]) for lr in lrs}


def compare(out_dir: str, base_config: str, extra_bindings: Sequence[str],
            meta_steps: int, adam_outer_lrs: Sequence[str],
            adam_inner_lrs: Sequence[str], heldout_tasks: int,
            heldout_steps: int, throughput_steps: int,
            with_no_pbt: bool = True) -> dict[str, Any]:
  """Runs every arm and writes the figures and tables; returns results.json."""
  os.makedirs(out_dir, exist_ok=True)
  common = list(extra_bindings) + [
      f"PopulationTrainer.num_meta_steps = {meta_steps}"]
  runs = {}
  for name, bindings in arms(adam_outer_lrs, with_no_pbt):
    logging.info("Training arm %s", name)
    runs[name] = run_arm(base_config, common + bindings,
                         os.path.join(out_dir, "arms", name))

  finals = {name: final(run["records"]) for name, run in runs.items()}

  def final_best(name):
    return np.inf if finals[name] is None else finals[name]

  adam_arms = [n for n in runs if n.startswith("adam_outer")]
  tuned = min(adam_arms, key=final_best) if adam_arms else None
  target = final_best(tuned) if tuned else None

  trainer = _build(base_config, common)
  optimizers = {name: (run["trainer"].learned_opt, run["best_theta"])
                for name, run in runs.items()}
  for lr in adam_inner_lrs:
    optimizers[f"adam_inner_lr{lr}"] = (
        lopt_base.learned_optimizer_from_opt(opt_base.Adam(float(lr))), None)
  inner_curves = heldout_curves(trainer, optimizers, heldout_tasks,
                                heldout_steps)

  heldout = {family: {name: curves.final_value(c) for name, c in by_opt.items()}
             for family, by_opt in inner_curves.items()}
  reference = reference_meta_loss(trainer, adam_inner_lrs)
  rates = {name: improvement_per_window(run["records"])
           for name, run in runs.items()}
  results = {
      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      "machine": benchmark.machine(),
      "base_config": base_config,
      "bindings": common,
      "meta_steps": meta_steps,
      "tuned_adam_outer_arm": tuned,
      "arms": {
          name: {
              "final_best_meta_loss": finals[name],
              "final_median_meta_loss": final(runs[name]["records"],
                                              "median_meta_loss"),
              "last_best_meta_loss": runs[name]["records"][-1]["best_meta_loss"],
              "last_median_meta_loss":
                  runs[name]["records"][-1]["median_meta_loss"],
              "lowest_best_meta_loss": lowest(runs[name]["records"]),
              "steps_to_tuned_adam_outer_final": (
                  None if target is None else
                  steps_to_reach(runs[name]["records"], target)),
              "improvement_per_100_steps": rates[name],
              "acceleration": acceleration(rates[name]),
              "wall_time_s": round(runs[name]["wall_time_s"], 1),
              "heldout_final_loss": {f: heldout[f][name] for f in heldout},
          } for name in runs},
      "adam_inner_eval_meta_loss": reference,
      "heldout_adam_inner_final_loss": {
          f: {n: v for n, v in by_opt.items() if n.startswith("adam_inner")}
          for f, by_opt in heldout.items()},
      "heldout": {"tasks_per_family": heldout_tasks, "steps": heldout_steps,
                  "seed": HELDOUT_SEED + trainer.seed, "curves": inner_curves},
  }
  if throughput_steps:
    results["throughput"] = benchmark.mixture_throughput(trainer,
                                                         throughput_steps)
  gin.clear_config()

  best_lr = min(reference, key=reference.get)
  report.plot_meta_loss({n: r["records"] for n, r in runs.items()}, tuned,
                 os.path.join(out_dir, "figure_meta_loss.png"),
                 (f"hand-designed Adam, lr {best_lr}", reference[best_lr]))
  report.plot_inner_curves(inner_curves,
                           os.path.join(out_dir, "figure_inner_curves.png"))
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(report.results_markdown(results))
  return results


def seed_summary(results_by_seed: dict[int, dict[str, Any]],
                 arm: str = "selftrain_pbt") -> dict[str, Any]:
  """`arm` vs. each seed's tuned Adam-outer arm, per seed and over seeds.

  One comparison is one seed of everything (population init, task draws,
  evaluation tasks); whether the target is met should not hinge on one.
  """
  rows = {}
  for seed, results in sorted(results_by_seed.items()):
    ours, tuned = results["arms"][arm], results["arms"][
        results["tuned_adam_outer_arm"]]
    rows[seed] = {
        "final_best": ours["final_best_meta_loss"],
        "last_best": ours["last_best_meta_loss"],
        "lowest_best": ours["lowest_best_meta_loss"],
        "tuned_adam_outer_final_best": tuned["final_best_meta_loss"],
        "tuned_adam_outer_last_best": tuned["last_best_meta_loss"],
        "steps_to_tuned_adam_outer_final":
            ours["steps_to_tuned_adam_outer_final"],
        "acceleration": ours["acceleration"],
        "tuned_adam_outer_acceleration": tuned["acceleration"],
    }

  def mean(key):
    values = [r[key] for r in rows.values() if r[key] is not None]
    return float(np.mean(values)) if values else None

  return {"arm": arm, "seeds": rows,
          "reached": sum(r["steps_to_tuned_adam_outer_final"] is not None
                         for r in rows.values()),
          "mean": {key: mean(key) for key in next(iter(rows.values()))
                   if key != "steps_to_tuned_adam_outer_final"}}


def compare_seeds(out_dir: str, seeds: Sequence[int],
                  extra_bindings: Sequence[str], **kwargs: Any
                  ) -> dict[str, Any]:
  """`compare` once per seed into out_dir/seed_<S>, then seeds.md/.json."""
  results = {
      seed: compare(os.path.join(out_dir, f"seed_{seed}"),
                    extra_bindings=[*extra_bindings,
                                    f"PopulationTrainer.seed = {seed}"],
                    **kwargs)
      for seed in seeds}
  summary = seed_summary(results)
  with open(os.path.join(out_dir, "seeds.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out_dir, "seeds.md"), "w") as f:
    f.write(report.seeds_markdown(summary))
  return summary
