"""One definition of a curve's "final" value, used by every report.

A single last point of a stochastic loss curve is noisy; every table in this
package (held-out suite, comparisons, evaluation reports) instead reports the
mean over the last `FINAL_FRACTION` of the curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FINAL_FRACTION = 0.1


def final_value(curve: Sequence[float] | np.ndarray,
                fraction: float = FINAL_FRACTION) -> float:
  """Mean of the last `fraction` of `curve` (at least one point); nan if any
  point there is non-finite, so a diverged run never looks converged."""
  values = np.asarray(curve, np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError("final_value of an empty curve")
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  tail = values[-max(1, math.ceil(fraction * values.size)):]
  return float(tail.mean()) if np.isfinite(tail).all() else math.nan
