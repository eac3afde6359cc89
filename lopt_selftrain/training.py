"""The meta-training loop: meta steps, a PBT round every interval, logs and
checkpoints (the outer loop; `lopt_selftrain.apps.train` is its command line).

`train` writes into its run dir (local or gs://): metrics.jsonl (one record per
PBT round, keys in docs/metrics.md), TensorBoard events, operative_config.gin,
checkpoints/. Calling it again on the same dir resumes from the latest valid
checkpoint; a dir that cannot be resumed as asked is left untouched (see
`run_dir`: restart, allow_config_change).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tqdm
from absl import logging

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)
from lopt_selftrain import (
  checkpoint,
  config,
  data_stream,
  rounds,
  run_dir,
  sharding,
)
from lopt_selftrain.population import PopulationState, PopulationTrainer


def _finite_or_none(values: Any) -> list[float | None]:
  """Strict-JSON list: non-finite values become null."""
  return [float(v) if np.isfinite(v) else None for v in np.asarray(values)]


def _summary_record(trainer: PopulationTrainer, result: rounds.RoundResult,
                    train_loss: np.ndarray | None, wall_time: float
                    ) -> dict[str, Any]:
  """The metrics record of one PBT round (keys: docs/metrics.md)."""
  meta_loss = result.meta_loss
  finite = meta_loss[np.isfinite(meta_loss)]
  record = {
      "step": int(sharding.to_host(result.state.step)),
      "wall_time_s": round(wall_time, 3),
      "member_meta_loss": _finite_or_none(meta_loss),
      "best_meta_loss": float(finite.min()) if finite.size else None,
      "median_meta_loss": float(np.median(finite)) if finite.size else None,
      "family_meta_loss": {
          name: _finite_or_none(row)
          for name, row in zip(trainer.task_mixture.names, result.per_family)},
      "member_train_loss": (None if train_loss is None
                            else _finite_or_none(train_loss)),
      "outer_optimizer": trainer.outer_optimizer_name,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      "pbt_events": result.events,
  }
  for key, values in trainer.outer.metrics(result.state.outer_opt_state).items():
    record[key] = _finite_or_none(values)
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
  """One training run's side effects: logs, checkpoints, progress (process 0).

  The TensorBoard writer is made at the first record, so a run refused at
  start-up leaves no events file behind.
  """

  def __init__(self, log_dir: str, run_config: config.RunConfig):
    self.log_dir = log_dir
    self.run_config = run_config
    self.is_chief = jax.process_index() == 0
    self.ckpt_dir = f"{log_dir.rstrip('/')}/{run_dir.CHECKPOINTS}"
    self.metrics = checkpoint.JsonlLog(
        f"{log_dir.rstrip('/')}/{run_dir.METRICS}")
    self.writer = None
    self.saved_step = None

  def save(self, state: PopulationState, last_good: PopulationState,
           meta: dict[str, Any]) -> None:
    """Every process calls it (gathers a sharded population); process 0 writes."""
    step = int(sharding.to_host(state.step))
    checkpoint.save(self.ckpt_dir, step,
                    {"population": state, "last_good": last_good}, meta,
                    keep=self.run_config.keep_checkpoints)
    self.saved_step = step

  def log(self, record: dict[str, Any]) -> None:
    if self.is_chief:
      self.metrics.append(record)
      if self.writer is None:
        self.writer = tf.summary.create_file_writer(self.log_dir)
      _write_tensorboard(self.writer, record)


def train(trainer: PopulationTrainer, log_dir: str,
          max_meta_steps: int | None = None,
          run_config: config.RunConfig | None = None,
          config_text: str | None = None, *, restart: bool = False,
          allow_config_change: bool = False) -> PopulationState:
  """Runs (or resumes) meta-training; returns the final population state.

  A plain loop: every meta step is `trainer.step`; at every `PBTConfig.interval`
  and at the end a PBT round (`rounds.pbt_round`) runs, then the round is
  logged and, every `RunConfig.checkpoint_interval`, checkpointed.

  Args:
    trainer: the population trainer.
    log_dir: run dir (see `run_dir` for what a rerun resumes or refuses).
    max_meta_steps: stop at this step (caps `trainer.num_meta_steps`).
    run_config: checkpoint bookkeeping.
    config_text: gin's operative config, saved on a fresh start and compared
      on a resume; None does neither.
    restart: move an existing run aside and start fresh.
    allow_config_change: resume under another config (recorded).

  Raises:
    rounds.DeadPopulationError: the population cannot learn (what was
      written before stays; the message says so).
    config.RunDirError, checkpoint.IncompatibleCheckpointError: the run dir
      cannot be continued as asked (nothing was changed).
  """
  run = _Run(log_dir, run_config or config.RunConfig())
  interval = trainer.pbt_config.interval
  end = trainer.num_meta_steps
  if max_meta_steps is not None:
    end = min(end, max_meta_steps)

  state = sharding.shard_population(trainer.init())
  target = rounds.checkpoint_target(state)
  begin = run_dir.start(log_dir, target, config_text, restart=restart,
                        allow_config_change=allow_config_change)
  if begin.restored is None:
    last_good = target["last_good"]
    meta = {"lineage": [], "wall_time_s": 0.0, "restores": 0}
  else:
    resumed_at, tree, meta = begin.restored
    data_stream.seek(trainer.task_mixture.families, meta["data_positions"])
    state = sharding.shard_population(tree["population"])
    last_good = sharding.shard_population(tree["last_good"])
    run.saved_step = resumed_at
    logging.info("Resumed from checkpoint at step %d.", resumed_at)
  restores = rounds.Restores(meta["restores"], meta.get("restores_in_a_row", 0))
  extra = {"config_change": begin.config_change} if begin.config_change else {}

  start_time = time.time() - meta["wall_time_s"]
  first = int(sharding.to_host(state.step))
  train_losses = []
  progress = tqdm.tqdm(total=end, initial=first, disable=not run.is_chief,
                       dynamic_ncols=True, desc="meta steps", file=sys.stderr)
  for step in range(first, end + 1):
    if (step % interval == 0 or step == end) and (
        begin.restored is None or step != first):
      try:
        result = rounds.pbt_round(trainer, state, last_good, restores)
      except rounds.DeadPopulationError as e:
        progress.close()
        raise rounds.DeadPopulationError(f"{e}; {_kept(log_dir, run)}") from e
      state, last_good, restores = result.state, result.last_good, result.restores
      meta["lineage"].extend(result.events)
      meta.update(wall_time_s=time.time() - start_time,
                  restores=restores.total, restores_in_a_row=restores.in_a_row,
                  data_positions=data_stream.positions(
                      trainer.task_mixture.families))
      train_loss = (np.mean(sharding.to_host(jnp.stack(train_losses)), axis=0)
                    if train_losses else None)
      record = _summary_record(trainer, result, train_loss,
                               meta["wall_time_s"])
      run.log({**record, **extra})
      extra, train_losses = {}, []
      progress.set_postfix(best_meta_loss=record["best_meta_loss"])
      if step == end or step % run.run_config.checkpoint_interval < interval:
        run.save(state, last_good, meta)
    if step < end:
      state, loss = trainer.step(state, step)
      train_losses.append(loss)
      progress.update(1)
  progress.close()
  return state


def _kept(log_dir: str, run: _Run) -> str:
  """What a stopped run leaves in its dir, and how to go on."""
  if run.saved_step is None:
    return (f"{log_dir} holds no checkpoint of this run: fix the config and "
            "rerun to start afresh")
  return (f"{log_dir} keeps the checkpoints and metrics up to step "
          f"{run.saved_step}: fix the config and rerun with "
          "--allow_config_change to resume from there (recorded), or "
          "--restart to start over")
