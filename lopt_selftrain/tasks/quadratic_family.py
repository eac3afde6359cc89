"""Ill-conditioned, noisy quadratics: the curvature range lo's quadratics lack.

lo's `FixedDimQuadraticFamily` has identity curvature (condition number 1), so a
learned optimizer meta-trained on it never needs to take different step sizes
per direction; lo's `NoisyQuadraticFamily` has losses in the thousands, which
swamp a mixture's other families. Here each task draws a condition number
kappa log-uniformly, diagonal curvatures log-uniform in [1/kappa, 1], a random
center, and (optionally) multiplicative gradient noise, and the loss is
normalised so a task starts near 1.
"""

from __future__ import annotations

from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization.tasks import base


class _ConditionedQuadraticTask(base.Task):
  """0.5 * mean_i h_i (x_i - c_i)^2 / mean_i h_i, with noisy gradients."""

  def __init__(self, dim: int, noise_std: float, cfg: dict[str, jax.Array]):
    super().__init__()
    self._dim, self._noise_std, self._cfg = dim, noise_std, cfg

  def init(self, key: jax.Array) -> jax.Array:
    return jax.random.normal(key, (self._dim,))

  def loss(self, params: jax.Array, key: jax.Array, batch: Any) -> jax.Array:
    del batch  # data-free
    h, c = self._cfg["curvature"], self._cfg["center"]
    loss = 0.5 * jnp.mean(h * jnp.square(params - c)) / jnp.mean(h)
    # Gradient noise proportional to each coordinate's gradient g_i: the term
    # below has value 0 and gradient noise_std * z_i * g_i.
    g = jax.lax.stop_gradient(h * (params - c) / (self._dim * jnp.mean(h)))
    noise = self._noise_std * jax.random.normal(key, (self._dim,)) * g * params
    return loss + jnp.sum(noise - jax.lax.stop_gradient(noise))

  def normalizer(self, loss: jax.Array) -> jax.Array:
    return jnp.clip(jnp.nan_to_num(loss, nan=10.0, posinf=10.0), 0, 10.0)


@gin.configurable
class ConditionedQuadraticFamily(base.TaskFamily):
  """Diagonal quadratics with sampled condition number and gradient noise."""

  def __init__(self, dim: int = 20,
               condition_range: tuple[float, float] = (1.0, 1e3),
               noise_std: float = 0.0, name: str | None = None):
    """Builds the family.

    Args:
      dim: number of parameters.
      condition_range: (low, high) of the log-uniform condition number, >= 1.
      noise_std: std of the multiplicative per-coordinate gradient noise.
      name: family name; defaults to cquad<dim>_k<high>[_noisy].
    """
    super().__init__()
    low, high = condition_range
    if dim < 1 or not 1 <= low <= high or noise_std < 0:
      raise ValueError(f"need dim >= 1, 1 <= condition low <= high and "
                       f"noise_std >= 0, got {dim}, {condition_range}, {noise_std}")
    self.datasets = None
    self.dim, self.noise_std = dim, noise_std
    self.condition_range = (float(low), float(high))
    self._name = name or (f"cquad{dim}_k{high:g}" + ("_noisy" if noise_std else ""))

  def sample(self, key: jax.Array) -> dict[str, jax.Array]:
    k_kappa, k_h, k_c = jax.random.split(key, 3)
    low, high = np.log(self.condition_range)
    log_kappa = jax.random.uniform(k_kappa, (), minval=low, maxval=high)
    log_h = -log_kappa * jax.random.uniform(k_h, (self.dim,))
    return {"curvature": jnp.exp(log_h),
            "center": jax.random.normal(k_c, (self.dim,))}

  def task_fn(self, cfg: dict[str, jax.Array]) -> base.Task:
    return _ConditionedQuadraticTask(self.dim, self.noise_std, cfg)
