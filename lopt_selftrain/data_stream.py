"""Data streams of lo task families: resumable, and feedable into `jit`.

lo draws inner-training batches from Python iterators (`family.datasets`) inside
its gradient estimators. Two consequences are handled here:

* Resuming. An iterator's position is not part of any array state. Every split
  iterator is wrapped to count the batches drawn; checkpoints store the counts,
  and a restarted run (whose freshly built, identically seeded iterators start
  at zero) skips ahead to them. Skipping replays the stream, which for
  in-memory data costs microseconds a batch.
* Jitting the whole population step. `batch_demand` traces one estimator call
  with stand-in iterators to learn how many batches of which split it draws;
  each step then draws exactly those batches on the host (`draw`), passes them
  into the jitted step as an argument, and `feeding` serves them to lo's
  iterator calls during tracing, so the compiled step reads its argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

SPLITS = ("train", "inner_valid", "outer_valid", "test")


class CountingIterator:
  """Iterator wrapper that counts the items drawn through it."""

  def __init__(self, iterator: Iterator[Any]):
    self._iterator = iterator
    self.count = 0

  def __iter__(self) -> CountingIterator:
    return self

  def __next__(self) -> Any:
    item = next(self._iterator)
    self.count += 1
    return item


def make_resumable(families: Sequence[Any]) -> None:
  """Wraps each family's split iterators in a `CountingIterator` (idempotent)."""
  for family in families:
    datasets = getattr(family, "datasets", None)
    if datasets is None:
      continue
    for split in SPLITS:
      it = getattr(datasets, split)
      if not isinstance(it, CountingIterator):
        setattr(datasets, split, CountingIterator(it))


def positions(families: Sequence[Any]) -> list[dict[str, int]]:
  """Batches drawn so far, per family and split (JSON-able)."""
  return [{} if getattr(f, "datasets", None) is None else
          {s: getattr(f.datasets, s).count for s in SPLITS} for f in families]


def seek(families: Sequence[Any], target: Sequence[dict[str, int]]) -> None:
  """Advances every stream to the `target` position (only forward)."""
  if len(target) != len(families):
    raise ValueError(f"checkpoint has data positions for {len(target)} task "
                     f"families, the config has {len(families)}")
  for family, wanted in zip(families, target):
    for split, count in wanted.items():
      it = getattr(family.datasets, split)
      if it.count > count:
        raise ValueError(f"cannot rewind data stream {split} from {it.count} "
                         f"to {count}")
      for _ in range(count - it.count):
        next(it)


def _abstract_batch(datasets: Any) -> Any:
  """Shapes/dtypes of one batch (lo's `abstract_batch`, else a peeked batch)."""
  if datasets.abstract_batch is not None:
    return datasets.abstract_batch
  batch = next(datasets.train)
  datasets.abstract_batch = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), batch)
  return datasets.abstract_batch


@contextlib.contextmanager
def feeding(family: Any, batches: dict[str, Any]):
  """Within the block, `family`'s split iterators yield `batches[split][i]`.

  `batches` maps split -> batch tree stacked on a leading axis (possibly
  tracers); each split is served in order. Splits not in `batches` raise.
  """
  datasets = getattr(family, "datasets", None)
  if datasets is None:
    yield
    return
  saved = {split: getattr(datasets, split) for split in SPLITS}

  def serve(split):
    stacked = batches.get(split)
    n = 0 if stacked is None else jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for i in range(n):
      yield jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    raise RuntimeError(f"the jitted step drew more {split!r} batches of "
                       f"{family.name} than batch_demand measured ({n})")

  try:
    for split in SPLITS:
      setattr(datasets, split, serve(split))
    yield
  finally:
    for split, it in saved.items():
      setattr(datasets, split, it)


def batch_demand(family: Any, fn: Callable[[], Any]) -> dict[str, int]:
  """Batches per split that one call of `fn` draws from `family` (traced once
  with zero stand-in batches, nothing is computed or consumed)."""
  datasets = getattr(family, "datasets", None)
  if datasets is None:
    return {}
  abstract = _abstract_batch(datasets)
  counts = dict.fromkeys(SPLITS, 0)
  saved = {split: getattr(datasets, split) for split in SPLITS}

  def stand_in(split):
    while True:
      counts[split] += 1
      yield jax.tree_util.tree_map(
          lambda a: np.zeros(a.shape, a.dtype), abstract)

  try:
    for split in SPLITS:
      setattr(datasets, split, stand_in(split))
    jax.eval_shape(fn)
  finally:
    for split, it in saved.items():
      setattr(datasets, split, it)
  return {split: n for split, n in counts.items() if n}


def draw(family: Any, demand: dict[str, int]) -> dict[str, Any]:
  """The batches one step needs, from the real (counting) iterators, stacked."""
  return {split: jax.tree_util.tree_map(
      lambda *xs: np.stack(xs),
      *[next(getattr(family.datasets, split)) for _ in range(n)])
          for split, n in demand.items()}
