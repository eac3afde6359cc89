"""TFDS image datasets from an explicit data_dir, never downloading.

Why not lo's own `tasks.datasets.image` loaders: they call `tfds.load` with
tfds' default data_dir and `download=True`, so on a machine without network a
missing dataset turns into a long hang or an opaque download error, and the
directory cannot be chosen per config. `tfds_image_datasets` loads a prepared
dataset from `data_dir` with `download=False`, holds it in RAM (uint8 unless
resized) and serves it through the same in-memory `Datasets` as MNIST-1D, with
lo's split convention (inner_valid / outer_valid carved from train, test =
test). The result plugs into any family that takes `datasets`: our
`MaskedMLPFamily` and lo's `ParametricImageConv`, `ParametricImageMLPAE` and
`ParametricImageResNet` (see gin_configs/tasks/tfds_fashion_mnist.gin).

lo's fixed image tasks (e.g. `ImageMLP_FashionMnist8_Relu32`) hard-code lo's
loaders, so they read tfds' default data_dir: $TFDS_DATA_DIR as seen when
tensorflow_datasets is first imported, else ~/tensorflow_datasets. Passing
`data_dir=None` here uses that same directory.
"""

from __future__ import annotations

import gin
import numpy as np
from learned_optimization.tasks.datasets import base as datasets_base

from lopt_selftrain.tasks import data

_LOAD_CHUNK = 10000  # examples per tf batch when pulling a split into RAM


class DatasetNotFoundError(ValueError):
  """A TFDS dataset is not prepared in the data_dir searched (no download tried)."""


def _load_split(name: str, split: str, data_dir: str | None,
                image_size: tuple[int, int] | None):
  """(images, labels, info) of one split, read fully into numpy arrays."""
  # Imported here: only TFDS configs need TensorFlow (see no_tensorflow).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  searched = data_dir or tfds.core.constants.DATA_DIR
  try:
    ds, info = tfds.load(name, split=split, data_dir=data_dir, download=False,
                         with_info=True)
  except AssertionError as e:  # tfds' "could not find data in DIR"
    raise DatasetNotFoundError(
        f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir="
        f"{searched!r}; on a machine with network run `tfds build {name} "
        f"--data_dir=DIR`, then copy DIR/{name} into {searched}") from e

  def to_example(ex):
    image = ex["image"]
    if image_size is not None and tuple(image.shape[:2]) != tuple(image_size):
      image = tf.image.resize(image, image_size)
    return image, ex["label"]

  # Chunked batches, not batch_size=-1: the latter crashes under tfds' mock.
  images, labels = [], []
  for x, y in tfds.as_numpy(ds.map(to_example).batch(_LOAD_CHUNK)):
    images.append(x)
    labels.append(y)
  return np.concatenate(images), np.concatenate(labels), info


@gin.configurable
def tfds_image_datasets(name: str, batch_size: int = 128,
                        data_dir: str | None = None,
                        image_size: tuple[int, int] | None = None,
                        seed: int = 0, valid_fraction: float = 0.1,
                        train_split: str = "train",
                        test_split: str = "test") -> datasets_base.Datasets:
  """A prepared TFDS image-classification dataset as lo `Datasets`.

  Args:
    name: TFDS name, e.g. "fashion_mnist", "cifar10", "mnist".
    batch_size: examples per batch for every split.
    data_dir: folder holding `NAME/VERSION/`; None means tfds' default.
    image_size: (height, width) to resize to once at load; None keeps native.
    seed: seeds the validation carve and the shuffling.
    valid_fraction: share of `train_split` for each of inner/outer_valid.
    train_split: TFDS split that train and both validation splits come from.
    test_split: TFDS split served as `test`.

  Returns:
    `Datasets` yielding {"image": float32 [B, H, W, C] in [0, 1],
    "label": int32 [B]}.

  Raises:
    DatasetNotFoundError: the dataset is not prepared in the searched data_dir.
  """
  x, y, info = _load_split(name, train_split, data_dir, image_size)
  x_test, y_test, _ = _load_split(name, test_split, data_dir, image_size)
  return data.array_datasets(
      (x, y), (x_test, y_test), batch_size=batch_size,
      num_classes=info.features["label"].num_classes, name=name, seed=seed,
      valid_fraction=valid_fraction, scale=1.0 / 255.0)
