"""In-memory datasets as lo `Datasets`, and the embedded MNIST-1D data.

Why in memory: the inner problems of self-training are small and sampled many
times per second, so batches come from numpy arrays held in RAM (a few MB) by
seeded, infinite, per-epoch-shuffled iterators; there is no input pipeline to
stall the population step. The same builder serves MNIST-1D and the TFDS image
datasets (`tfds_data`), so both expose identical splits and batch dicts.

MNIST-1D is generated locally by the `mnist1d` package (no download), which
makes the embedded task family usable on any machine, including CI. Generation
is deterministic from `generation_seed` and takes a few seconds, so the arrays
are cached as one `.npz` per (num_samples, generation_seed) under `data_dir`
(default: $LOPT_DATA_DIR, else ~/.cache/lopt_selftrain). The cache is written to
a temporary file and renamed, so concurrent workers never read a partial file.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator

import gin
import jax
import numpy as np
from learned_optimization.tasks.datasets import base as datasets_base

from lopt_selftrain import files

Arrays = tuple[np.ndarray, np.ndarray]
SPLITS = ("train", "inner_valid", "outer_valid", "test")
MNIST1D_NUM_CLASSES = 10


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int,
             rng: np.random.Generator, scale: float) -> Iterator[dict]:
  """Endless epochs over (x, y) in a fresh random order, dropping the remainder."""
  while True:
    order = rng.permutation(len(y))
    for start in range(0, len(y) - batch_size + 1, batch_size):
      idx = order[start:start + batch_size]
      yield {"image": x[idx].astype(np.float32) * np.float32(scale),
             "label": y[idx].astype(np.int32)}


def array_datasets(train: Arrays, test: Arrays, *, batch_size: int,
                   num_classes: int, name: str, seed: int = 0,
                   valid_fraction: float = 0.1,
                   scale: float = 1.0) -> datasets_base.Datasets:
  """lo `Datasets` over in-memory arrays; validation splits carved from train.

  Args:
    train: (inputs, labels) of the source's training split.
    test: (inputs, labels) of the source's test split, used as `test` unchanged.
    batch_size: examples per batch, for every split.
    num_classes: label count, stored in `extra_info["num_classes"]` as lo does.
    name: short dataset name (`extra_info["name"]`), used in family names.
    seed: seeds the train/valid carve and every split's shuffling.
    valid_fraction: fraction of the training split given to each of
      inner_valid and outer_valid (disjoint from each other and from train).
    scale: multiplies inputs when batching (1/255 keeps uint8 images small in
      RAM and yields floats in [0, 1]).

  Returns:
    `Datasets` whose iterators yield {"image": float32 [B, ...], "label": int32
    [B]} forever.
  """
  x, y = train
  n_valid = int(len(y) * valid_fraction)
  order = np.random.default_rng(seed).permutation(len(y))
  parts = {
      "train": order[2 * n_valid:],
      "inner_valid": order[:n_valid],
      "outer_valid": order[n_valid:2 * n_valid],
  }
  split_arrays = {k: (x[idx], y[idx]) for k, idx in parts.items()}
  split_arrays["test"] = test
  for split, (_, labels) in split_arrays.items():
    if len(labels) < batch_size:
      raise ValueError(
          f"{name} split {split} has {len(labels)} examples, fewer than "
          f"batch_size={batch_size}")
  iterators = [
      datasets_base.ThreadSafeIterator(_batches(
          *split_arrays[split], batch_size,
          np.random.default_rng([seed, i]), scale))
      for i, split in enumerate(SPLITS)
  ]
  abstract_batch = {
      "image": jax.ShapeDtypeStruct((batch_size,) + x.shape[1:], np.float32),
      "label": jax.ShapeDtypeStruct((batch_size,), np.int32),
  }
  extra_info = {
      "num_classes": num_classes,
      "name": name,
      "num_examples": {k: len(v[1]) for k, v in split_arrays.items()},
  }
  return datasets_base.Datasets(*iterators, extra_info=extra_info,
                                abstract_batch=abstract_batch)


def standardise(x: np.ndarray, train_rows: slice | np.ndarray) -> np.ndarray:
  """`x` with each feature scaled by the mean and std (+1e-6) of `x[train_rows]`
  only, so held-back rows never inform the statistics."""
  mean, std = x[train_rows].mean(0), x[train_rows].std(0) + 1e-6
  return (x - mean) / std


def default_data_dir() -> str:
  """$LOPT_DATA_DIR if set, else ~/.cache/lopt_selftrain (read at call time)."""
  return os.environ.get("LOPT_DATA_DIR") or os.path.expanduser(
      "~/.cache/lopt_selftrain")


def _generate_mnist1d(num_samples: int, generation_seed: int) -> dict:
  """Runs mnist1d's generator, leaving the global RNGs it reseeds untouched."""
  from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top

  args = mnist1d_data.get_dataset_args()
  args.num_samples = num_samples
  args.seed = generation_seed
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    raw = mnist1d_data.make_dataset(args)
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return {
      "x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int32),
      "x_test": raw["x_test"].astype(np.float32),
      "y_test": raw["y_test"].astype(np.int32),
  }



def load_mnist1d(num_samples: int = 5000, generation_seed: int = 42,
                 data_dir: str | None = None) -> dict:
  """MNIST-1D arrays {x, y, x_test, y_test}; generated once, then read from cache.

  Args:
    num_samples: total examples; mnist1d keeps 80% as train and 20% as test.
    generation_seed: seed of mnist1d's generator (42 is the published dataset's).
    data_dir: cache folder; None means `default_data_dir()`.

  Returns:
    Dict of float32 inputs [N, 40] and int32 labels [N].
  """
  directory = data_dir or default_data_dir()
  path = f"{directory.rstrip('/')}/mnist1d_n{num_samples}_seed{generation_seed}.npz"
  if files.exists(path):
    with np.load(io.BytesIO(files.read_bytes(path))) as cached:
      return {k: cached[k] for k in cached.files}
  arrays = _generate_mnist1d(num_samples, generation_seed)
  files.makedirs(directory)
  npz = io.BytesIO()  # A few MB; zip needs seek/tell, which not every URL has.
  np.savez(npz, **arrays)
  files.write_atomic(path, npz.getvalue())
  return arrays


@gin.configurable
def mnist1d_datasets(batch_size: int = 64, seed: int = 0,
                     num_samples: int = 5000, generation_seed: int = 42,
                     valid_fraction: float = 0.1,
                     data_dir: str | None = None) -> datasets_base.Datasets:
  """MNIST-1D as lo `Datasets`: 40-dim float inputs, 10 classes."""
  arrays = load_mnist1d(num_samples, generation_seed, data_dir)
  return array_datasets((arrays["x"], arrays["y"]),
                        (arrays["x_test"], arrays["y_test"]),
                        batch_size=batch_size,
                        num_classes=MNIST1D_NUM_CLASSES, name="mnist1d",
                        seed=seed, valid_fraction=valid_fraction)


@gin.configurable
def tabular_datasets(batch_size: int = 32, seed: int = 0,
                     num_samples: int = 400, num_features: int = 16,
                     num_classes: int = 3, num_redundant: int = 0,
                     class_sep: float = 1.0,
                     generation_seed: int = 0, test_fraction: float = 0.2,
                     valid_fraction: float = 0.1) -> datasets_base.Datasets:
  """A small generated tabular classification set, as lo `Datasets`.

  scikit-learn's `make_classification` (half the features informative,
  `num_redundant` linear mixes of them), standardised with training
  statistics. Why: tuned Adam memorises the
  held-out suite's small tabular sets to ~1e-7 training loss, a regime
  MNIST-1D (5000 examples) never reaches within a meta-training horizon; a
  few hundred generated examples reach it without touching any held-out
  dataset.
  """
  from sklearn import datasets as skd  # noqa: PLC0415  (optional at import)

  x, y = skd.make_classification(
      n_samples=num_samples, n_features=num_features,
      n_informative=max(2, num_features // 2), n_redundant=num_redundant,
      n_classes=num_classes, n_clusters_per_class=2, class_sep=class_sep,
      random_state=generation_seed)
  x, y = x.astype(np.float32), y.astype(np.int32)
  n_test = int(num_samples * test_fraction)
  x = standardise(x, slice(n_test, None))
  return array_datasets((x[n_test:], y[n_test:]), (x[:n_test], y[:n_test]),
                        batch_size=batch_size, num_classes=num_classes,
                        name=f"tab{num_features}x{num_classes}", seed=seed,
                        valid_fraction=valid_fraction)
