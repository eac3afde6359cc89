"""Resumable data streams for lo task families.

lo draws inner-training batches from Python iterators (`family.datasets`), whose
position is not part of any array state. To make a resumed run see exactly the
batches an uninterrupted one would, every split iterator is wrapped to count
the batches drawn; checkpoints store the counts, and a restarted run (whose
freshly built, identically seeded iterators start at zero) skips ahead to them.
Skipping replays the stream, which for in-memory data costs microseconds a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

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
