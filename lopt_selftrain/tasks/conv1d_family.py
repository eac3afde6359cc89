"""A family of 1-D convnet classifiers whose architecture is sampled per task.

Meta-training only on MLPs teaches a learned optimizer nothing about weight
sharing (conv kernels see gradients summed over positions, so their scale
differs from dense weights). This family adds 1-D convnets on the embedded
MNIST-1D sequences. Like `MaskedMLPFamily` (same vmap constraint: one family,
one parameter shape), the architecture is data:

* channels: conv channels at index >= channels are masked to zero;
* depth: conv layer i >= depth passes its input through (`where`); layer 0
  (stride 2) is always active, so depth is in [1, max_depth];
* activation and init scale: as in `MaskedMLPFamily`.

The head flattens the [length / 2, channels] features into a dense classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from learned_optimization.tasks import base
from learned_optimization.tasks.datasets import base as datasets_base

from lopt_selftrain.tasks import data
from lopt_selftrain.tasks.mlp_family import (
  ACTIVATIONS,
  MaskedClassifierTask,
  TaskCfg,
  log_uniform,
  log_uniform_int,
)

_DIMS = ("NWC", "WIO", "NWC")


def _conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (stride,), "SAME",
                                      dimension_numbers=_DIMS)


class _MaskedConv1DTask(MaskedClassifierTask):
  """One sampled 1-D convnet architecture."""

  def _mask(self) -> jax.Array:
    return (jnp.arange(self._family.max_channels) < self._cfg["channels"]).astype(
        jnp.float32)

  def init(self, key: jax.Array) -> Any:
    fam = self._family
    mask = self._mask()
    channels = self._cfg["channels"].astype(jnp.float32)
    scale = self._cfg["init_scale"]
    keys = jax.random.split(key, fam.max_depth + 1)
    k, c = fam.kernel_size, fam.max_channels
    params = {"conv_0": {
        "w": jax.random.normal(keys[0], (k, 1, c)) * scale / np.sqrt(k)
             * mask[None, None, :],
        "b": jnp.zeros(c)}}
    for i in range(1, fam.max_depth):
      w = jax.random.normal(keys[i], (k, c, c)) * scale / jnp.sqrt(k * channels)
      params[f"conv_{i}"] = {"w": w * mask[None, :, None] * mask[None, None, :],
                             "b": jnp.zeros(c)}
    fan_in = fam.out_length * channels
    w = jax.random.normal(keys[-1], (fam.out_length, c, fam.num_classes))
    params["out"] = {
        "w": (w * scale / jnp.sqrt(fan_in) * mask[None, :, None]).reshape(
            fam.out_length * c, fam.num_classes),
        "b": jnp.zeros(fam.num_classes)}
    return params

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    fam = self._family
    mask = self._mask()

    def act(z):
      return jax.lax.switch(self._cfg["activation"], fam.activation_fns, z)

    h = jnp.reshape(images, (images.shape[0], -1, 1))
    h = act(_conv(h, params["conv_0"]["w"], 2) + params["conv_0"]["b"]) * mask
    for i in range(1, fam.max_depth):
      layer = params[f"conv_{i}"]
      z = act(_conv(h, layer["w"], 1) + layer["b"]) * mask
      h = jnp.where(i < self._cfg["depth"], z, h)
    h = jnp.reshape(h, (h.shape[0], -1))
    return h @ params["out"]["w"] + params["out"]["b"]


@gin.configurable
class MaskedConv1DFamily(base.TaskFamily):
  """1-D convnet classifiers with per-task channels, depth, activation, init."""

  def __init__(self, datasets: datasets_base.Datasets | None = None,
               max_channels: int = 16, min_channels: int = 4,
               max_depth: int = 3, kernel_size: int = 5,
               activations: Sequence[str] = ("relu", "tanh", "gelu", "silu"),
               init_scale_range: tuple[float, float] = (0.5, 2.0),
               name: str | None = None):
    """Builds the family.

    Args:
      datasets: lo `Datasets` of 1-D inputs [B, L] (or [B, L, 1]) with
        `extra_info["num_classes"]`; None means `data.mnist1d_datasets()`.
      max_channels: allocated channels per conv layer; the sampled count is
        log-uniform in [min_channels, max_channels].
      min_channels: fewest sampled channels.
      max_depth: allocated conv layers; depth is uniform in [1, max_depth].
      kernel_size: conv kernel width.
      activations: names from `mlp_family.ACTIVATIONS`, sampled uniformly.
      init_scale_range: (low, high) of the log-uniform weight-scale multiplier.
      name: family name; defaults to conv1d_<dataset>_c<max_channels>_d<max_depth>.
    """
    super().__init__()
    if not 1 <= min_channels <= max_channels or max_depth < 1 or kernel_size < 1:
      raise ValueError(f"need 1 <= min_channels <= max_channels, max_depth >= 1 "
                       f"and kernel_size >= 1, got {min_channels}, "
                       f"{max_channels}, {max_depth}, {kernel_size}")
    unknown = sorted(set(activations) - set(ACTIVATIONS))
    if unknown or not activations:
      raise ValueError(f"activations must be a non-empty subset of "
                       f"{sorted(ACTIVATIONS)}, got {list(activations)}")
    self.datasets = data.mnist1d_datasets() if datasets is None else datasets
    length = int(np.prod(self.datasets.abstract_batch["image"].shape[1:]))
    self.out_length = -(-length // 2)  # conv_0 has stride 2, SAME padding
    self.num_classes = int(self.datasets.extra_info["num_classes"])
    self.max_channels, self.min_channels = max_channels, min_channels
    self.max_depth, self.kernel_size = max_depth, kernel_size
    self.activations = tuple(activations)
    self.activation_fns = tuple(ACTIVATIONS[a] for a in self.activations)
    self.init_scale_range = tuple(init_scale_range)
    dataset_name = self.datasets.extra_info.get("name", "data")
    self._name = name or f"conv1d_{dataset_name}_c{max_channels}_d{max_depth}"

  def sample(self, key: jax.Array) -> TaskCfg:
    k_ch, k_depth, k_act, k_scale = jax.random.split(key, 4)
    return {
        "channels": log_uniform_int(k_ch, self.min_channels, self.max_channels),
        "depth": jax.random.randint(k_depth, (), 1, self.max_depth + 1),
        "activation": jax.random.randint(k_act, (), 0, len(self.activations)),
        "init_scale": log_uniform(k_scale, *self.init_scale_range),
    }

  def task_fn(self, cfg: TaskCfg) -> base.Task:
    return _MaskedConv1DTask(self, cfg)
