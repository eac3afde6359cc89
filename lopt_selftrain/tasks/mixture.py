"""A weighted mixture of task families for meta-training.

lo's gradient estimators (TruncatedPES, ...) take ONE task family each, because
their persistent unroll state holds parameters of that family's shapes. So the
population trainer keeps one estimator, with its own unroll state, per family
of the mixture, and every meta step draws ONE family index with
`sample_index` (probability = weight) and advances the whole vmapped
population on that family's estimator. The population step stays a single
vmapped computation, and a meta step costs one family, not the sum of all.
Weights are therefore the long-run fractions of meta steps spent per family.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
from learned_optimization.tasks import base


@gin.configurable
class TaskMixture:
  """Task families with sampling weights and unique names."""

  def __init__(self, families: Sequence[base.TaskFamily],
               weights: Sequence[float] | None = None,
               names: Sequence[str] | None = None):
    """Validates and stores the mixture.

    Args:
      families: lo TaskFamily instances, at least one.
      weights: non-negative, not all zero, one per family; None means uniform.
        Normalized to sum to 1.
      names: one unique name per family (for logs and per-family state);
        None uses each `family.name`, suffixed _1, _2, ... where repeated.

    Raises:
      ValueError: empty families, bad weights, or names/weights of wrong length.
    """
    self.families = tuple(families)
    n = len(self.families)
    if n == 0:
      raise ValueError("TaskMixture needs at least one task family, got none")
    for family in self.families:
      if not isinstance(family, base.TaskFamily):
        raise TypeError(f"TaskMixture families must be lo TaskFamily "
                        f"instances, got {type(family).__name__}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
      raise ValueError(f"TaskMixture got {w.size} weights for {n} families")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
      raise ValueError(f"TaskMixture weights must be finite, >= 0 and not all "
                       f"zero, got {list(w)}")
    self.weights = w / w.sum()
    self.names = (self._default_names() if names is None
                  else tuple(str(x) for x in names))
    if len(self.names) != n or len(set(self.names)) != n:
      raise ValueError(f"TaskMixture needs {n} unique names, got "
                       f"{list(self.names)}")

  def _default_names(self) -> tuple[str, ...]:
    raw = [family.name for family in self.families]
    seen: dict[str, int] = {}
    names = []
    for name in raw:
      if raw.count(name) > 1:
        seen[name] = seen.get(name, 0) + 1
        name = f"{name}_{seen[name]}"
      names.append(name)
    return tuple(names)

  def __len__(self) -> int:
    return len(self.families)

  def sample_index(self, rng: np.random.Generator) -> int:
    """Draws a family index with probability equal to its weight.

    On the host: choosing a step's family never waits for the device, so the
    population steps can be dispatched back to back.
    """
    return int(rng.choice(len(self.families), p=self.weights))

  def __repr__(self) -> str:
    parts = ", ".join(f"{n}: {w:.3g}" for n, w in zip(self.names, self.weights, strict=True))
    return f"TaskMixture({parts})"
