"""Placing the population on devices and hosts with JAX's own SPMD runtime.

The population axis (leading axis of every member array) is partitioned over a
1-D `jax.sharding.Mesh` of all devices of all processes; everything else (PRNG
key, step counter, data batches) is replicated. The jitted/vmapped population
step is unchanged: computation follows the data, and PBT's `gather` along the
population axis becomes XLA communication. With one device this is a no-op.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

POPULATION_AXIS = "population"


def mesh() -> Mesh:
  """1-D mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (POPULATION_AXIS,))


def check_population(population_size: int) -> None:
  """Population must split evenly over devices (no padded members)."""
  n_dev = jax.device_count()
  if population_size % n_dev:
    raise ValueError(
        f"population_size={population_size} is not divisible by the "
        f"{n_dev} devices; use a multiple of {n_dev}")


def shard_population(state: Any) -> Any:
  """Shards a `PopulationState`: member fields split, key and step replicated.

  Every process passes the same full values (same seed, or the same
  checkpoint), so each device just takes its slice.
  """
  if jax.device_count() == 1:
    return state
  m = mesh()

  def place(spec):
    def put(x):
      x = to_host(x)
      return jax.make_array_from_callback(x.shape, NamedSharding(m, spec),
                                          lambda index: x[index])
    return lambda tree: jax.tree_util.tree_map(put, tree)

  shard, replicate = place(PartitionSpec(POPULATION_AXIS)), place(PartitionSpec())
  members = shard(state.replace(key=None, step=None))
  return members.replace(key=replicate(state.key), step=replicate(state.step))


def to_host(x: Any) -> np.ndarray:
  """Full value of `x` as numpy on every process (gathers across hosts)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
