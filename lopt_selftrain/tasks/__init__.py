"""The inner-problem suite: task families, their data, and the meta-training mix.

Importing this package registers every configurable with gin (ours and the lo
task modules that import on lo 0.0.1), so gin_configs/tasks/*.gin can be parsed
after `import lopt_selftrain.tasks` (importing the parent package first restores
the legacy JAX names lo needs). The trainer consumes a `TaskMixture`.
"""

from lopt_selftrain.tasks import lo_families  # noqa: F401  (gin registrations)
from lopt_selftrain.tasks.conv1d_family import MaskedConv1DFamily
from lopt_selftrain.tasks.data import (
  array_datasets,
  default_data_dir,
  load_mnist1d,
  mnist1d_datasets,
  tabular_datasets,
)
from lopt_selftrain.tasks.generated_family import GeneratedTabularFamily
from lopt_selftrain.tasks.mixture import TaskMixture
from lopt_selftrain.tasks.mlp_family import MaskedMLPFamily
from lopt_selftrain.tasks.quadratic_family import ConditionedQuadraticFamily
from lopt_selftrain.tasks.tfds_data import DatasetNotFoundError, tfds_image_datasets

__all__ = [
    "ConditionedQuadraticFamily",
    "DatasetNotFoundError",
    "GeneratedTabularFamily",
    "MaskedConv1DFamily",
    "MaskedMLPFamily",
    "TaskMixture",
    "array_datasets",
    "default_data_dir",
    "load_mnist1d",
    "mnist1d_datasets",
    "tabular_datasets",
    "tfds_image_datasets",
]
