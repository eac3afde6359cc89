"""A family of MLP classifiers whose architecture is sampled per task.

The self-training population meets many architectures, but lo's truncated
unroll `vmap`s `num_tasks` tasks drawn from ONE family inside one `jit`, so every
task of a family must have the same parameter shapes and tree structure, and
its config must be arrays (it is sampled under `vmap`). This family therefore
allocates parameters at its maximum size and turns the architecture into data:

* width: hidden units at index >= width are multiplied by a 0/1 mask after the
  activation, and their weights start at zero;
* depth: hidden layer i >= depth passes its input through unchanged (`where`),
  so the first hidden layer is always active and depth is in [1, max_depth];
* activation: an index into `activations`, applied with `jax.lax.switch`;
* init scale: weights ~ N(0, init_scale^2 / active fan-in), biases zero.

Masked units and skipped layers receive exactly zero gradient, so each task
trains as the small network it stands for. Under `vmap` the switch evaluates
every activation, which is cheap at these sizes. Different maximum sizes (and
so different compute costs) are different family instances, e.g. gin scopes in
gin_configs/tasks/mix_paper.gin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization.tasks import base
from learned_optimization.tasks.datasets import base as datasets_base

from lopt_selftrain.tasks import data

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
}

Params = dict[str, dict[str, jax.Array]]
TaskCfg = dict[str, jax.Array]


def log_uniform(key: jax.Array, low: float, high: float) -> jax.Array:
  """A scalar log-uniform in [low, high)."""
  return jnp.exp(jax.random.uniform(key, (), minval=np.log(low),
                                    maxval=np.log(high)))


def log_uniform_int(key: jax.Array, low: int, high: int) -> jax.Array:
  """An int32 scalar log-uniform over [low, high] inclusive."""
  value = jnp.floor(log_uniform(key, low, high + 1))
  return jnp.clip(value, low, high).astype(jnp.int32)


class MaskedClassifierTask(base.Task):
  """One sampled classifier of a masked family; `cfg` may hold tracers (built
  under vmap). Subclasses define `init` and `logits`; the loss is softmax
  cross-entropy on `batch["image"]`, `batch["label"]`."""

  def __init__(self, family: Any, cfg: TaskCfg):
    super().__init__()
    self.datasets = family.datasets
    self._family = family
    self._cfg = cfg

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    raise NotImplementedError

  def loss(self, params: Any, key: jax.Array, batch: Any) -> jax.Array:
    del key  # deterministic model
    logp = jax.nn.log_softmax(self.logits(params, batch["image"]))
    return -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))

  def normalizer(self, loss: jax.Array) -> jax.Array:
    """Clips to 1.5x chance-level loss so diverged tasks cannot dominate meta-loss."""
    cap = 1.5 * np.log(self._family.num_classes)
    return jnp.clip(jnp.nan_to_num(loss, nan=cap, posinf=cap, neginf=cap), 0, cap)


class MaskedMLPTask(MaskedClassifierTask):
  """One sampled MLP architecture."""

  def _unit_mask(self) -> jax.Array:
    return (jnp.arange(self._family.max_width) < self._cfg["width"]).astype(
        jnp.float32)

  def init(self, key: jax.Array) -> Params:
    fam = self._family
    mask = self._unit_mask()
    width = self._cfg["width"].astype(jnp.float32)
    scale = self._cfg["init_scale"]
    keys = jax.random.split(key, fam.max_depth + 1)
    params = {}
    in_dim, in_mask, fan_in = fam.input_dim, jnp.ones(fam.input_dim), fam.input_dim
    for i in range(fam.max_depth):
      w = jax.random.normal(keys[i], (in_dim, fam.max_width))
      params[f"hidden_{i}"] = {
          "w": w * scale / jnp.sqrt(fan_in) * in_mask[:, None] * mask[None, :],
          "b": jnp.zeros(fam.max_width),
      }
      in_dim, in_mask, fan_in = fam.max_width, mask, width
    w = jax.random.normal(keys[-1], (fam.max_width, fam.num_classes))
    params["out"] = {"w": w * scale / jnp.sqrt(width) * mask[:, None],
                     "b": jnp.zeros(fam.num_classes)}
    return params

  def logits(self, params: Params, images: jax.Array) -> jax.Array:
    fam = self._family
    mask = self._unit_mask()
    h = jnp.reshape(images, (images.shape[0], -1))
    for i in range(fam.max_depth):
      layer = params[f"hidden_{i}"]
      z = jax.lax.switch(self._cfg["activation"], fam.activation_fns,
                         h @ layer["w"] + layer["b"]) * mask
      h = z if i == 0 else jnp.where(i < self._cfg["depth"], z, h)
    return h @ params["out"]["w"] + params["out"]["b"]


@gin.configurable
class MaskedMLPFamily(base.TaskFamily):
  """MLP classifiers with per-task width, depth, activation and init scale."""

  def __init__(self, datasets: datasets_base.Datasets | None = None,
               max_width: int = 32, min_width: int = 8, max_depth: int = 2,
               activations: Sequence[str] = ("relu", "tanh", "gelu", "silu"),
               init_scale_range: tuple[float, float] = (0.5, 2.0),
               name: str | None = None,
               shape: tuple[int, int] | None = None):
    """Builds the family.

    Args:
      datasets: lo `Datasets` with `abstract_batch` and
        `extra_info["num_classes"]`; None means `data.mnist1d_datasets()` (the
        embedded MNIST-1D, configured through gin).
      max_width: allocated hidden units per layer; the sampled width is
        log-uniform in [min_width, max_width].
      min_width: smallest sampled width.
      max_depth: allocated hidden layers; the depth is uniform in [1, max_depth].
      activations: names from `ACTIVATIONS`, sampled uniformly.
      init_scale_range: (low, high) of the log-uniform weight-scale multiplier.
      name: family name; defaults to mlp_<dataset>_w<max_width>_d<max_depth>.
      shape: (input width, classes) of a subclass whose tasks bring their own
        data: `datasets` then stays None.
    """
    super().__init__()
    if not 1 <= min_width <= max_width or max_depth < 1:
      raise ValueError(f"need 1 <= min_width <= max_width and max_depth >= 1, "
                       f"got {min_width}, {max_width}, {max_depth}")
    unknown = sorted(set(activations) - set(ACTIVATIONS))
    if unknown or not activations:
      raise ValueError(f"activations must be a non-empty subset of "
                       f"{sorted(ACTIVATIONS)}, got {list(activations)}")
    if shape is not None:
      self.datasets, (self.input_dim, self.num_classes) = None, shape
    else:
      self.datasets = data.mnist1d_datasets() if datasets is None else datasets
      self.input_dim = int(np.prod(self.datasets.abstract_batch["image"].shape[1:]))
      self.num_classes = int(self.datasets.extra_info["num_classes"])
    self.max_width, self.min_width, self.max_depth = max_width, min_width, max_depth
    self.activations = tuple(activations)
    self.activation_fns = tuple(ACTIVATIONS[a] for a in self.activations)
    self.init_scale_range = tuple(init_scale_range)
    dataset_name = (self.datasets.extra_info.get("name", "data")
                    if self.datasets is not None else "data")
    self._name = name or f"mlp_{dataset_name}_w{max_width}_d{max_depth}"

  def sample(self, key: jax.Array) -> TaskCfg:
    k_width, k_depth, k_act, k_scale = jax.random.split(key, 4)
    return {
        "width": log_uniform_int(k_width, self.min_width, self.max_width),
        "depth": jax.random.randint(k_depth, (), 1, self.max_depth + 1),
        "activation": jax.random.randint(k_act, (), 0, len(self.activations)),
        "init_scale": log_uniform(k_scale, *self.init_scale_range),
    }

  def task_fn(self, cfg: TaskCfg) -> base.Task:
    return MaskedMLPTask(self, cfg)
