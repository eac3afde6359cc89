"""Population based training over learned-optimizer members: the pure parts.

Pure functions over arrays whose leading axis is the population (evosax style):
`select` decides who is replaced by whom from one round of evaluation, `gather`
applies it to any population pytree (XLA communicates it when the axis is sharded),
`explore` perturbs the copies. Divergence handling is part of selection: a member
with any non-finite value is always replaced, and `select` reports when nobody is
left to copy from so the caller restores the last good population. One PBT round
(evaluation, these functions, restores, lineage) is `rounds.pbt_round`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PBTConfig:
  """Population based training settings.

  Attributes:
    enabled: False is the "no PBT" ablation: no exploit/explore; diverged
      members are still replaced (a safety net, not selection).
    interval: meta steps between evaluation + selection rounds.
    exploit_fraction: bottom fraction replaced by copies of the top fraction.
    explore_factors: a copied member's self-update step scale is multiplied by
      one of these, drawn uniformly (classic PBT perturbation).
    weight_noise_std: relative Gaussian noise added to copied weights (0 = exact
      copies; the step-scale perturbation is the default source of diversity).
    step_scale_range: (low, high) the explored step scale is clipped to. PBT's
      short-horizon selection favours ever larger steps right after take-off
      and ever smaller ones near a plateau; a bounded search range stops both.
    initial_step_scale_spread: members start at step scales spaced evenly in
      log from scale / spread to scale * spread (`SelfUpdate.step_scale` is
      the geometric centre), as PBT usually starts from a spread of
      hyperparameters; 1.0 starts every member at the same scale.
    max_restores_in_a_row: the run stops (`rounds.DeadPopulationError`) at
      the round where every member has diverged this many rounds in a row,
      instead of restoring the last good population yet again.
  """
  enabled: bool = True
  interval: int = 50
  exploit_fraction: float = 0.25
  explore_factors: tuple[float, ...] = (0.8, 1.25)
  weight_noise_std: float = 0.0
  step_scale_range: tuple[float, float] = (0.0, math.inf)
  initial_step_scale_spread: float = 1.0
  max_restores_in_a_row: int = 3

  def __post_init__(self):
    if self.interval < 1:
      raise ValueError(f"PBTConfig.interval must be >= 1, got {self.interval}")
    if not 0.0 <= self.exploit_fraction < 1.0:
      raise ValueError("PBTConfig.exploit_fraction must be in [0, 1), got "
                       f"{self.exploit_fraction}")
    if not self.explore_factors or min(self.explore_factors) <= 0:
      raise ValueError("PBTConfig.explore_factors must be positive, got "
                       f"{self.explore_factors}")
    if self.weight_noise_std < 0:
      raise ValueError("PBTConfig.weight_noise_std must be >= 0, got "
                       f"{self.weight_noise_std}")
    low, high = self.step_scale_range
    if not 0 <= low < high:
      raise ValueError("PBTConfig.step_scale_range must be (low, high) with "
                       f"0 <= low < high, got {self.step_scale_range}")
    if not self.initial_step_scale_spread >= 1:
      raise ValueError("PBTConfig.initial_step_scale_spread must be >= 1, got "
                       f"{self.initial_step_scale_spread}")
    if self.max_restores_in_a_row < 1:
      raise ValueError("PBTConfig.max_restores_in_a_row must be >= 1, got "
                       f"{self.max_restores_in_a_row}")

  def initial_step_scales(self, step_scale: float, n: int) -> np.ndarray:
    """[n] starting self-update scales: a geometric ladder around
    `step_scale` (see `initial_step_scale_spread`)."""
    spread = self.initial_step_scale_spread
    return np.geomspace(step_scale / spread, step_scale * spread, n,
                        dtype=np.float32)


def select(meta_loss: np.ndarray, healthy: np.ndarray, exploit_fraction: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Chooses, for every member, whose weights it holds after this round.

  Members are ranked by meta-loss (lower is better; non-finite or unhealthy
  counts as worst). The bottom `floor(exploit_fraction * N)` members, and every
  unhealthy member, copy a member drawn uniformly from the top ones: as many
  healthy members as are replaced by exploitation (at least one, and never
  overlapping the bottom).

  Args:
    meta_loss: [N] evaluation meta-loss of each member.
    healthy: [N] False where a member had any non-finite weight, loss or grad.
    exploit_fraction: fraction of the population replaced by exploitation.
    rng: host RNG; identical seeds on every host give identical decisions.

  Returns:
    source: [N] int index each member copies (itself if kept).
    replaced: [N] bool, True where source != own index.
    If no member is healthy, `source` is all -1: restore the last good population.
  """
  n = meta_loss.shape[0]
  ok = healthy & np.isfinite(meta_loss)
  if not ok.any():
    return np.full(n, -1), np.ones(n, bool)
  score = np.where(ok, meta_loss, np.inf)
  order = np.argsort(score, kind="stable")  # best first
  num_bottom = int(np.floor(exploit_fraction * n))
  num_top = max(1, min(num_bottom, n - num_bottom))  # top and bottom disjoint
  donors = order[:min(num_top, int(ok.sum()))]
  doomed = np.zeros(n, bool)
  if num_bottom:
    doomed[order[n - num_bottom:]] = True
  doomed |= ~ok
  doomed[donors] = False  # a top member is never replaced
  source = np.arange(n)
  source[doomed] = rng.choice(donors, size=int(doomed.sum()))
  return source, doomed


def gather(tree: Any, source: jax.Array) -> Any:
  """Member i of the result is member source[i] of `tree` (leading axis)."""
  return jax.tree_util.tree_map(lambda x: jnp.take(x, source, axis=0), tree)


def explore(step_scale: jax.Array, theta: Any, replaced: jax.Array,
            key: jax.Array, explore_factors: tuple[float, ...],
            weight_noise_std: float,
            step_scale_range: tuple[float, float] = (0.0, math.inf)
            ) -> tuple[jax.Array, Any]:
  """Perturbs replaced members: step scale by a random factor, weights by noise.

  Args:
    step_scale: [N] self-update step scales.
    theta: population of learned-optimizer weights, leading axis N.
    replaced: [N] bool, members that just received a copy.
    key: PRNG key.
    explore_factors: multiplicative perturbations of the step scale.
    weight_noise_std: relative std of the weight noise (0 disables it).
    step_scale_range: (low, high) a perturbed scale is clipped to.

  Returns:
    (step_scale, theta) with only the replaced members changed.
  """
  key_factor, key_noise = jax.random.split(key)
  factors = jnp.asarray(explore_factors, step_scale.dtype)
  drawn = factors[jax.random.randint(key_factor, step_scale.shape, 0,
                                     len(explore_factors))]
  perturbed = jnp.clip(step_scale * drawn, *step_scale_range)
  step_scale = jnp.where(replaced, perturbed, step_scale)
  if weight_noise_std == 0:
    return step_scale, theta
  leaves, treedef = jax.tree_util.tree_flatten(theta)
  keys = jax.random.split(key_noise, len(leaves))

  def perturb(x, k):
    noise = jax.random.normal(k, x.shape, x.dtype) * weight_noise_std
    mask = replaced.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x * (1 + noise), x)

  return step_scale, jax.tree_util.tree_unflatten(
      treedef, [perturb(x, k) for x, k in zip(leaves, keys)])


def lineage_events(step: int, source: np.ndarray, replaced: np.ndarray,
                   healthy: np.ndarray) -> list[dict[str, Any]]:
  """One JSON-able record per replaced member: who copied whom, when, why."""
  return [{"step": int(step), "member": int(i), "copied_from": int(source[i]),
           "reason": "exploit" if healthy[i] else "nonfinite"}
          for i in np.flatnonzero(replaced)]
