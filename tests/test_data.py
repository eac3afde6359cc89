"""Tests for the task data: embedded MNIST-1D, generated tabular sets and tfds
image datasets."""

import os
import random

import numpy as np
import pytest

from lopt_selftrain import tasks
from lopt_selftrain.tasks import data

# --- embedded MNIST-1D data


def test_mnist1d_splits_batches_and_seeding(data_dir):
  ds = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  assert ds.extra_info["num_examples"] == {
      "train": 3200, "inner_valid": 400, "outer_valid": 400, "test": 1000}
  assert ds.extra_info["num_classes"] == 10
  for split in data.SPLITS:
    batch = next(ds.split(split))
    assert batch["image"].shape == (32, 40) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < 10
  assert ds.abstract_batch["image"].shape == (32, 40)
  # Infinite: more batches than one epoch of outer_valid (400 // 32 = 12).
  assert len([next(ds.outer_valid) for _ in range(30)]) == 30

  again = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  same = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir)
  other = tasks.mnist1d_datasets(batch_size=32, data_dir=data_dir, seed=1)
  first = next(again.train)
  np.testing.assert_array_equal(first["image"], next(same.train)["image"])
  assert not np.array_equal(first["image"], next(other.train)["image"])


def test_mnist1d_validation_carved_from_train(data_dir):
  arrays = tasks.load_mnist1d(data_dir=data_dir)
  x, y = arrays["x"], arrays["y"]
  ds = data.array_datasets((x, y), (arrays["x_test"], arrays["y_test"]),
                           batch_size=400, num_classes=10, name="m")
  rows = {split: {r.tobytes() for r in next(ds.split(split))["image"]}
          for split in ("inner_valid", "outer_valid")}
  train_rows = set()
  for _ in range(8):  # one epoch of the 3200 train examples
    train_rows |= {r.tobytes() for r in next(ds.train)["image"]}
  assert len(train_rows) == 3200
  assert not rows["inner_valid"] & rows["outer_valid"]
  assert not (rows["inner_valid"] | rows["outer_valid"]) & train_rows
  assert (rows["inner_valid"] | rows["outer_valid"]) <= {r.tobytes() for r in x}


def test_mnist1d_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
  np.random.seed(7)
  random.seed(7)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(7)
  random.seed(7)
  first = tasks.load_mnist1d(num_samples=500, data_dir=str(tmp_path))
  # mnist1d reseeds the global RNGs; loading must leave them as they were.
  assert np.random.rand() == expected_np and random.random() == expected_py
  assert os.listdir(tmp_path) == ["mnist1d_n500_seed42.npz"]
  assert first["x"].shape == (400, 40) and first["x_test"].shape == (100, 40)

  def fail(*args):
    raise AssertionError("cache was not used")

  monkeypatch.setattr(data, "_generate_mnist1d", fail)
  second = tasks.load_mnist1d(num_samples=500, data_dir=str(tmp_path))
  assert second.keys() == first.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
    assert first[key].dtype == second[key].dtype


def test_mnist1d_default_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  assert tasks.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("LOPT_DATA_DIR")
  assert tasks.default_data_dir().endswith(os.path.join(".cache", "lopt_selftrain"))


def test_mnist1d_is_real_data(data_dir):
  from sklearn.neural_network import MLPClassifier  # pylint: disable=g-import-not-at-top

  arrays = tasks.load_mnist1d(data_dir=data_dir)
  clf = MLPClassifier((100,), max_iter=200, random_state=0)
  with pytest.warns(Warning):  # sklearn warns it has not fully converged
    clf.fit(arrays["x"], arrays["y"])
  assert clf.score(arrays["x_test"], arrays["y_test"]) > 0.4  # chance is 0.1



# --- tfds


def test_tfds_image_datasets_from_mock(mock_image_datasets):
  fmnist, cifar = mock_image_datasets["fashion_mnist"], mock_image_datasets["cifar10"]
  assert fmnist.extra_info["num_classes"] == 10
  batch = next(fmnist.train)
  assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["label"].dtype == np.int32 and batch["label"].max() < 10
  assert next(cifar.test)["image"].shape == (16, 32, 32, 3)
  assert fmnist.abstract_batch["image"].shape == (16, 8, 8, 1)


def test_tfds_missing_dataset_names_dataset_and_dir(tmp_path):
  with pytest.raises(tasks.DatasetNotFoundError) as info:
    tasks.tfds_image_datasets("fashion_mnist", data_dir=str(tmp_path))
  assert isinstance(info.value, ValueError)
  line = str(info.value).splitlines()[0]
  assert "fashion_mnist" in line and str(tmp_path) in line
  assert "tfds build fashion_mnist" in line


def test_tabular_datasets_are_generated_standardised_and_seeded():
  def make(generation_seed):
    return tasks.tabular_datasets(batch_size=16, num_samples=250,
                                  num_features=8, num_classes=3,
                                  generation_seed=generation_seed)

  ds = make(1)
  assert ds.extra_info["num_classes"] == 3
  assert ds.extra_info["num_examples"] == {
      "train": 160, "inner_valid": 20, "outer_valid": 20, "test": 50}
  batch = next(ds.train)
  assert batch["image"].shape == (16, 8) and batch["image"].dtype == np.float32
  assert set(np.unique(batch["label"])) <= {0, 1, 2}
  train = np.concatenate([next(ds.train)["image"] for _ in range(10)])
  assert abs(train.mean()) < 0.2 and 0.8 < train.std() < 1.2
  first = next(make(1).test)["image"]
  np.testing.assert_array_equal(first, next(make(1).test)["image"])
  assert not np.allclose(first, next(make(2).test)["image"])
