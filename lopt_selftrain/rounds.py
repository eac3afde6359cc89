"""One PBT round, start to end: the only place that decides what a population
looks like after an evaluation.

  evaluate every member on shared tasks
    -> pbt.select (exploit the bottom, replace every non-finite member)
    -> trainer.exploit_explore (copy whole members, perturb the copies)
    or, when no member is left to copy from, restore the last good population
    -> lineage events

and stop the run (`DeadPopulationError`) when nothing can recover: every member
non-finite at the first evaluation, or every member diverged
`PBTConfig.max_restores_in_a_row` rounds in a row.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np

from lopt_selftrain import pbt, sharding
from lopt_selftrain.population import FAULTS, PopulationState, PopulationTrainer


class DeadPopulationError(Exception):
  """Every member blew up and restoring cannot help: the config must change."""


@dataclasses.dataclass(frozen=True)
class Restores:
  """How often the last good population came back (kept in checkpoints).

  Attributes:
    total: restores in the run so far; seeds each restore's fresh unrolls.
    in_a_row: consecutive rounds that ended in a restore.
  """
  total: int = 0
  in_a_row: int = 0


@dataclasses.dataclass(frozen=True)
class RoundResult:
  """What one PBT round made of the population.

  Attributes:
    state: the population after the round, on the mesh.
    last_good: the population a later restore returns to (without unrolls).
    meta_loss: [N] evaluated meta-loss of the population before selection.
    per_family: [F, N] the same per task family.
    events: lineage events of this round (who copied whom, and why).
    restores: restore counts after this round.
  """
  state: PopulationState
  last_good: PopulationState
  meta_loss: np.ndarray
  per_family: np.ndarray
  events: list[dict[str, Any]]
  restores: Restores


def without_unrolls(state: PopulationState) -> PopulationState:
  """The last good population is kept without its (large) unroll states,
  which carry no learned information; a restore draws fresh ones."""
  return state.replace(estimator_states=())


def checkpoint_target(state: PopulationState) -> dict[str, PopulationState]:
  """The tree a run's checkpoint holds, shaped like `state`: the population and
  PBT's last good population."""
  return {"population": state, "last_good": without_unrolls(state)}


def pbt_round(trainer: PopulationTrainer, state: PopulationState,
              last_good: PopulationState, restores: Restores = Restores()
              ) -> RoundResult:
  """Evaluates the population and, at a step that is a positive multiple of
  `PBTConfig.interval`, selects (at other steps, e.g. step 0 or a run's last
  step, the round only evaluates).

  Raises:
    DeadPopulationError: every member is non-finite at step 0, or every
      member diverged for the `PBTConfig.max_restores_in_a_row`-th round in a
      row. Nothing is changed; the caller keeps what it wrote so far.
  """
  config = trainer.pbt_config
  step = int(sharding.to_host(state.step))
  meta_loss, per_family = (sharding.to_host(x) for x in trainer.evaluate(state))
  healthy = sharding.to_host(state.healthy)
  ok = healthy & np.isfinite(meta_loss)

  def result(new_state, new_last_good, events, new_restores):
    # Selection built some fields on the host: put the population back on the
    # mesh (a no-op on one device).
    return RoundResult(sharding.shard_population(new_state), new_last_good,
                       meta_loss, per_family, events, new_restores)

  if step == 0 or step % config.interval:
    if step == 0 and not ok.any():
      raise DeadPopulationError(
          "every member is non-finite at the first evaluation (step 0, before "
          f"any meta step): {_what_blew_up(trainer, state, meta_loss)}")
    return result(state.replace(meta_loss=meta_loss), last_good, [], restores)

  fraction = config.exploit_fraction if config.enabled else 0.0
  rng = np.random.default_rng([trainer.seed, step])
  source, replaced = pbt.select(meta_loss, healthy, fraction, rng)
  if ok.any():
    new_state = trainer.exploit_explore(state, source, replaced, meta_loss)
    return result(new_state, without_unrolls(new_state),
                  pbt.lineage_events(step, source, replaced, ok),
                  Restores(restores.total, 0))

  then = int(sharding.to_host(last_good.step))
  in_a_row = restores.in_a_row + 1
  if in_a_row >= config.max_restores_in_a_row:
    raise DeadPopulationError(
        f"every member diverged {in_a_row} PBT round(s) in a row (the last at "
        f"step {step}; the last good population is of step {then}): "
        f"{_what_blew_up(trainer, state, meta_loss)}")
  logging.warning("Every member diverged at step %d; restoring the population "
                  "of step %d.", step, then)
  total = restores.total + 1
  key, k_unrolls = jax.random.split(jax.random.fold_in(state.key, total))
  restored = trainer.fresh_unrolls(last_good.replace(step=state.step, key=key),
                                   k_unrolls)
  events = [{"step": step, "member": -1, "copied_from": then,
             "reason": "restore"}]
  return result(restored, last_good, events, Restores(total, in_a_row))


def _what_blew_up(trainer: PopulationTrainer, state: PopulationState,
                  meta_loss: np.ndarray) -> str:
  """'non-finite weights in 2 of 2 members (MLPLOpt, self-update scales ...)':
  for each member the first non-finite thing of the round, then the
  architecture and the outer optimizer's scale."""
  host = jax.tree_util.tree_map(sharding.to_host, state)
  fault = np.asarray(host.fault)
  weights_ok = np.ones(len(fault), bool)
  for leaf in jax.tree_util.tree_leaves(trainer.thetas(host)):
    weights_ok &= np.isfinite(np.asarray(leaf).reshape(len(fault), -1)).all(1)
  causes = np.where(fault > 0, fault - 1, np.where(
      ~weights_ok, FAULTS.index("weights"),
      np.where(~np.isfinite(meta_loss), len(FAULTS), -1)))
  names = FAULTS + ("evaluation meta-loss",)
  counts = ", ".join(f"{names[c]} in {int((causes == c).sum())}"
                     for c in range(len(names)) if (causes == c).any())
  return (f"non-finite {counts} of {len(fault)} members (learned optimizer "
          f"{type(trainer.learned_opt).__name__}, "
          f"{trainer.outer.describe(host.outer_opt_state)})")
