r"""absl app: meta-train a population of learned optimizers (self-training + PBT).

  python -m lopt_selftrain.train \
      --gin_config=gin_configs/selftrain_cpu_demo.gin \
      --train_log_dir=/tmp/selftrain [--gin_bindings=...] [--max_outer_steps=N]

Writes into --train_log_dir (local or gs://): metrics.jsonl (one record per
evaluation round), TensorBoard events, operative_config.gin, checkpoints/.
Rerunning the same command resumes from the latest valid checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tqdm
from absl import app, flags, logging

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import checkpoint, config, data_stream, sharding
from lopt_selftrain.population import PopulationState, PopulationTrainer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The app's flags; defined only when run as an app, so modules can import
  each other without clashing flag names."""
  flags.DEFINE_multi_string("gin_config", [],
                            "Gin config file(s), applied in order.")
  flags.DEFINE_multi_string("gin_bindings", [],
                            "Extra gin bindings, applied last.")
  flags.DEFINE_string("train_log_dir", None,
                      "Output directory (local or gs://).")
  flags.DEFINE_integer("max_outer_steps", None,
                       "Stop after this many outer steps (caps num_outer_steps).")
  flags.DEFINE_bool("multihost", False,
                    "Call jax.distributed.initialize() (multi-host TPU slices).")


def _finite_or_none(values: Any) -> list[float | None]:
  """Strict-JSON list: non-finite values become null."""
  return [float(v) if np.isfinite(v) else None for v in np.asarray(values)]


def _summary_record(trainer: PopulationTrainer, state: PopulationState,
                    meta_loss: np.ndarray, per_family: np.ndarray,
                    train_loss: np.ndarray | None, wall_time: float,
                    events: list[dict[str, Any]]) -> dict[str, Any]:
  finite = meta_loss[np.isfinite(meta_loss)]
  record = {
      "step": int(sharding.to_host(state.step)),
      "wall_time_s": round(wall_time, 3),
      "member_meta_loss": _finite_or_none(meta_loss),
      "best_meta_loss": float(finite.min()) if finite.size else None,
      "median_meta_loss": float(np.median(finite)) if finite.size else None,
      "family_meta_loss": {
          name: _finite_or_none(row)
          for name, row in zip(trainer.task_mixture.names, per_family)},
      "member_train_loss": (None if train_loss is None
                            else _finite_or_none(train_loss)),
      "outer_optimizer": trainer.outer_optimizer_name,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      "pbt_events": events,
  }
  if trainer.self_training:
    record["member_step_scale"] = _finite_or_none(
        sharding.to_host(state.outer_opt_state.step_scale))
  return record


def _write_tensorboard(writer: Any, record: dict[str, Any]) -> None:
  step = record["step"]
  with writer.as_default(step=step):
    for i, v in enumerate(record["member_meta_loss"]):
      if v is not None:
        tf.summary.scalar(f"meta_loss/member_{i}", v)
    for key in ("best_meta_loss", "median_meta_loss"):
      if record[key] is not None:
        tf.summary.scalar(f"meta_loss/{key.replace('_meta_loss', '')}",
                          record[key])
    reasons = [e["reason"] for e in record["pbt_events"]]
    for reason in ("exploit", "nonfinite", "restore"):
      tf.summary.scalar(f"pbt/{reason}", reasons.count(reason))
  writer.flush()


class _Run:
  """One training run's side effects: logs, checkpoints, progress (process 0)."""

  def __init__(self, trainer: PopulationTrainer, log_dir: str,
               run_config: config.RunConfig):
    self.trainer = trainer
    self.log_dir = log_dir
    self.run_config = run_config
    self.is_chief = jax.process_index() == 0
    self.ckpt_dir = f"{log_dir.rstrip('/')}/checkpoints"
    self.metrics = checkpoint.JsonlLog(f"{log_dir.rstrip('/')}/metrics.jsonl")
    self.writer = (tf.summary.create_file_writer(log_dir) if self.is_chief
                   else None)

  def save(self, state: PopulationState, last_good: PopulationState,
           meta: dict[str, Any]) -> None:
    tree = jax.tree_util.tree_map(sharding.to_host,
                                  {"population": state, "last_good": last_good})
    if self.is_chief:
      checkpoint.save(self.ckpt_dir, int(tree["population"].step), tree, meta,
                      keep=self.run_config.keep_checkpoints)

  def log(self, record: dict[str, Any]) -> None:
    if self.is_chief:
      self.metrics.append(record)
      _write_tensorboard(self.writer, record)


def train(trainer: PopulationTrainer, log_dir: str,
          max_outer_steps: int | None = None,
          run_config: config.RunConfig | None = None,
          write_operative_config: bool = False) -> PopulationState:
  """Runs (or resumes) meta-training; returns the final population state.

  `write_operative_config` saves gin's operative config into `log_dir` only
  once the checkpoint there (if any) restored, so a rerun refused for an
  incompatible config keeps the config that the checkpoints were trained with.
  """
  run = _Run(trainer, log_dir, run_config or config.RunConfig())
  interval = trainer.pbt_config.interval
  end = trainer.num_outer_steps
  if max_outer_steps is not None:
    end = min(end, max_outer_steps)

  state = sharding.shard_population(trainer.init())
  target = checkpoint_target(state)
  restored = checkpoint.restore_latest(run.ckpt_dir, target)
  if restored is None:
    last_good = target["last_good"]
    meta = {"lineage": [], "wall_time_s": 0.0, "restores": 0}
    if run.is_chief:
      run.metrics.truncate_after(-1)
  else:
    step, tree, meta = restored
    data_stream.seek(trainer.task_mixture.families, meta["data_positions"])
    state = sharding.shard_population(tree["population"])
    last_good = sharding.shard_population(tree["last_good"])
    logging.info("Resumed from checkpoint at step %d.", step)
    if run.is_chief:
      run.metrics.truncate_after(step)
  if write_operative_config and run.is_chief:
    config.write_operative_config(log_dir)

  start_time = time.time() - meta["wall_time_s"]
  step = int(sharding.to_host(state.step))
  train_losses = []
  progress = tqdm.tqdm(total=end, initial=step, disable=not run.is_chief,
                       dynamic_ncols=True, desc="outer steps", file=sys.stderr)
  resumed_at = step if restored is not None else None
  while True:
    if (step % interval == 0 or step == end) and step != resumed_at:
      meta_loss, per_family = (sharding.to_host(x)
                               for x in trainer.evaluate(state))
      events = []
      if step > 0 and step % interval == 0:
        state, events, last_good = _select(trainer, state, meta_loss,
                                           last_good, meta)
      else:
        state = state.replace(meta_loss=meta_loss)
      # Selection built some fields on the host: put the population back on
      # the mesh (a no-op on one device).
      state = sharding.shard_population(state)
      meta["lineage"].extend(events)
      meta["wall_time_s"] = time.time() - start_time
      meta["data_positions"] = data_stream.positions(
          trainer.task_mixture.families)
      train_loss = (np.mean(sharding.to_host(jnp.stack(train_losses)), axis=0)
                    if train_losses else None)
      record = _summary_record(trainer, state, meta_loss, per_family,
                               train_loss, meta["wall_time_s"], events)
      run.log(record)
      train_losses = []
      progress.set_postfix(best_meta_loss=record["best_meta_loss"])
      if step == end or step % run.run_config.checkpoint_interval < interval:
        run.save(state, last_good, meta)
    if step >= end:
      break
    state, loss = trainer.step(state, step)
    train_losses.append(loss)
    step += 1
    progress.update(1)
  progress.close()
  return state


def checkpoint_target(state: PopulationState) -> dict[str, PopulationState]:
  """The tree a checkpoint holds, shaped like `state`: the population and PBT's
  last good population (kept without its unroll states)."""
  return {"population": state, "last_good": _without_unrolls(state)}


def _without_unrolls(state: PopulationState) -> PopulationState:
  """The last good population is kept without its (large) unroll states."""
  return state.replace(estimator_states=())


def _select(trainer: PopulationTrainer, state: PopulationState,
            meta_loss: np.ndarray, last_good: PopulationState,
            meta: dict[str, Any]
            ) -> tuple[PopulationState, list[dict[str, Any]], PopulationState]:
  """PBT round; restores the last good population if every member diverged."""
  new_state, events = trainer.select(state, meta_loss)
  if new_state is not None:
    return new_state, events, _without_unrolls(new_state)
  meta["restores"] += 1
  now, then = (int(sharding.to_host(s.step)) for s in (state, last_good))
  logging.warning("Every member diverged at step %d; restoring the population "
                  "of step %d.", now, then)
  key, k_unrolls = jax.random.split(
      jax.random.fold_in(state.key, meta["restores"]))
  restored = trainer.fresh_unrolls(
      last_good.replace(step=state.step, key=key), k_unrolls)
  events = [{"step": now, "member": -1, "copied_from": then,
             "reason": "restore"}]
  return restored, events, last_good


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    if FLAGS.multihost:
      jax.distributed.initialize()
    if not FLAGS.train_log_dir:
      raise ValueError("--train_log_dir is required")
    if FLAGS.max_outer_steps is not None and FLAGS.max_outer_steps < 0:
      raise ValueError(f"--max_outer_steps must be >= 0, got "
                       f"{FLAGS.max_outer_steps}")
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    config.check_writable(FLAGS.train_log_dir)
    trainer = PopulationTrainer()
    run_config = config.RunConfig()
    sharding.check_population(trainer.population_size)
  except Exception as e:  # noqa: BLE001  -- start-up errors: one clear line.
    config.exit_with_error(e)
  try:
    train(trainer, FLAGS.train_log_dir, FLAGS.max_outer_steps, run_config,
          write_operative_config=True)
  except checkpoint.IncompatibleCheckpointError as e:
    config.exit_with_error(e)


if __name__ == "__main__":
  define_flags()
  app.run(main)
