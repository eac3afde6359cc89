"""How close a compiled step gets to the device's limits.

XLA's compiled cost analysis gives a program's floating-point operations and
bytes accessed; divided by the measured step time they are achieved FLOP/s and
bytes/s, which only mean something against the device's ceilings: the
datasheet peaks below, and ceilings measured in the same run
(`measure_ceilings`). Where the arithmetic intensity (FLOP per byte) is under
the ridge point (peak FLOP/s / peak bytes/s) the step is memory-bound and is
judged by bandwidth, else by FLOP/s.

XLA's HloCostAnalysis counts a while loop's body once, whatever its trip count
(seen on CPU with jax 0.10: a 10-step scan reports the flops of one step).
lo's unrolls are scans, so `loop_bodies_counted_once` probes the installed XLA,
and the caller corrects with a second compiled variant of the step (see
`benchmark.step_cost`).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Datasheet leads, dense (no sparsity): plain fp32 (not tf32 tensor-core) FLOP/s
# and HBM bytes/s. Matched by substring of `device_kind`, first match wins.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"fp32_flops": 67e12, "hbm_bytes": 4.8e12}),
    ("H100 PCIe", {"fp32_flops": 51e12, "hbm_bytes": 2.0e12}),
    ("H100", {"fp32_flops": 67e12, "hbm_bytes": 3.35e12}),
    ("A100", {"fp32_flops": 19.5e12, "hbm_bytes": 2.0e12}),
)


def device_peaks(device_kind: str) -> dict[str, float] | None:
  """Datasheet peaks of a device kind; None when unknown (e.g. CPU)."""
  for name, peaks in PEAKS:
    if name in device_kind:
      return dict(peaks, matched=name)
  return None


def cost(compiled: Any) -> dict[str, float]:
  """{"flops", "bytes"} from a compiled program's XLA cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0]
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes": float(analysis.get("bytes accessed", 0.0))}


def loop_bodies_counted_once() -> bool:
  """Whether this XLA's cost analysis counts a scan's body once (not x trips)."""
  def body(c, _):
    return jnp.tanh(c @ c), None

  x = jnp.ones((32, 32), jnp.float32)
  flops = [cost(jax.jit(lambda x, n=n: jax.lax.scan(body, x, None, length=n)[0])
                .lower(x).compile())["flops"] for n in (1, 8)]
  return flops[1] < 2 * flops[0]


def memory_stats() -> dict[str, int] | None:
  """Peak and limit of device 0's memory in bytes; None where not reported."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use",
                                     "bytes_limit") if k in stats}


def _median_seconds(fn: Any, arg: Any, repeats: int) -> float:
  jax.block_until_ready(fn(arg))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(arg))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure_ceilings(copy_bytes: int, matmul_n: int, repeats: int = 10
                     ) -> dict[str, float]:
  """Measured ceilings: bytes/s of an elementwise pass (read + write) and
  FLOP/s of an n x n x n float32 matmul at full fp32 precision and at XLA's
  default precision (tf32 on the GPU's tensor cores where XLA picks it)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (copy_bytes // 4,), jnp.float32)
  copy_s = _median_seconds(jax.jit(lambda v: v * 1.0001), x, repeats)
  a = jax.random.normal(jax.random.PRNGKey(1), (matmul_n, matmul_n), jnp.float32)
  result = {"copy_bytes_per_s": 2 * x.nbytes / copy_s}
  for name, precision in (("fp32", jax.lax.Precision.HIGHEST),
                          ("default", jax.lax.Precision.DEFAULT)):
    seconds = _median_seconds(
        jax.jit(lambda m, p=precision: jnp.matmul(m, m, precision=p)), a, repeats)
    result[f"matmul_{name}_flops_per_s"] = 2 * matmul_n**3 / seconds
  return result


def judge(flops: float, bytes_: float, seconds: float,
          peaks: dict[str, float] | None) -> dict[str, Any]:
  """Achieved rates of a step, and (with peaks) which limit applies and the
  fraction of it reached: the issue's target is >= 25% of fp32 peak FLOP/s,
  or >= 50% of peak bandwidth where the step is memory-bound."""
  result: dict[str, Any] = {
      "flops_per_s": flops / seconds, "bytes_per_s": bytes_ / seconds,
      "intensity_flop_per_byte": flops / bytes_ if bytes_ else None}
  if peaks is None:
    result.update(bound="unknown (no peaks for this device)", met=None)
    return result
  ridge = peaks["fp32_flops"] / peaks["hbm_bytes"]
  memory_bound = result["intensity_flop_per_byte"] is not None and (
      result["intensity_flop_per_byte"] < ridge)
  flops_fraction = result["flops_per_s"] / peaks["fp32_flops"]
  bytes_fraction = result["bytes_per_s"] / peaks["hbm_bytes"]
  result.update(
      ridge_flop_per_byte=ridge, fraction_of_fp32_peak=flops_fraction,
      fraction_of_hbm_peak=bytes_fraction,
      bound="memory" if memory_bound else "compute",
      met=bool(bytes_fraction >= 0.5 if memory_bound else flops_fraction >= 0.25))
  return result
