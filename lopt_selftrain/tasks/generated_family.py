"""MLPs on small classification sets generated per task: `GeneratedTabularFamily`.

Why: a learned optimizer judged against tuned Adam on small real sets (the
held-out suite's breast cancer, wine, iris, digits) must keep descending until
a set is memorised, at whatever size, feature count and class count the set
has. `tabular_datasets` gives a mix a few fixed sets; here every sampled task
is a *new* set, so one family holds as many datasets as the meta-training
draws tasks.

Each task's set is a function of its config (no Python data pipeline, the
family's `datasets` is None as for lo's quadratics): `n` examples of `f`
features and `c` classes, drawn like scikit-learn's `make_classification`
(two Gaussian clusters per class around centroids of scale `class_sep`, a
random linear mix of the features, a fraction `label_noise` of labels
replaced). Example i is generated from `fold_in(data_key, i)`, so a training
step builds only the rows of its minibatch (uniform indices in [0, n), drawn
from the step's key): the set is fixed for the task's whole run and can be
memorised. Features are standardised with the set's exact distribution
moments (computed from the centroids and the mix, not from rows). Feature and
class counts are data: features >= f are zero (their weights get no
gradient) and logits of classes >= c are masked out, so the loss starts near
log(c).
"""

from __future__ import annotations

from typing import Any

import gin
import jax
import jax.numpy as jnp

from lopt_selftrain.tasks import mlp_family

_CLUSTERS_PER_CLASS = 2


class _GeneratedTabularTask(mlp_family.MaskedMLPTask):
  """A masked MLP on the set its config generates."""

  def _set_moments(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Centroids, feature mix, and the standardising mean and scale."""
    fam, cfg = self._family, self._cfg
    k_mu, k_mix = jax.random.split(cfg["data_key"])
    clusters = fam.max_classes * _CLUSTERS_PER_CLASS
    feature_mask = (jnp.arange(fam.input_dim) < cfg["features"]).astype(jnp.float32)
    mu = cfg["class_sep"] * jax.random.normal(k_mu, (clusters, fam.input_dim))
    mu = mu * feature_mask
    mix = (jnp.eye(fam.input_dim) + jax.random.normal(
        k_mix, (fam.input_dim,) * 2) / jnp.sqrt(cfg["features"].astype(jnp.float32)))
    mix = mix * feature_mask[:, None] * feature_mask[None, :]
    # Clusters of the c active classes are equally likely.
    active = (jnp.arange(clusters) // _CLUSTERS_PER_CLASS) < cfg["classes"]
    weights = active / jnp.sum(active)
    mean_z = weights @ mu
    centred = (mu - mean_z) * jnp.sqrt(weights)[:, None]
    # z's covariance is centred.T @ centred (centroids) + identity on the
    # active features (noise), so diag(mix.T @ cov_z @ mix) is, without
    # forming the F x F x F product on every step:
    var_x = (jnp.sum(jnp.square(centred @ mix), axis=0)
             + jnp.sum(jnp.square(mix), axis=0))
    return mu, mix, mean_z @ mix, jnp.sqrt(var_x + 1e-6)

  def rows(self, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Standardised inputs [B, max_features] and labels [B] of examples `index`."""
    fam, cfg = self._family, self._cfg
    mu, mix, mean_x, std_x = self._set_moments()

    def one(i):
      k_y, k_cluster, k_noise, k_flip, k_flip_y = jax.random.split(
          jax.random.fold_in(cfg["data_key"], i), 5)
      y = jax.random.randint(k_y, (), 0, cfg["classes"])
      cluster = y * _CLUSTERS_PER_CLASS + jax.random.randint(
          k_cluster, (), 0, _CLUSTERS_PER_CLASS)
      z = mu[cluster] + jax.random.normal(k_noise, (fam.input_dim,))
      flip = jax.random.uniform(k_flip) < cfg["label_noise"]
      y = jnp.where(flip, jax.random.randint(k_flip_y, (), 0, cfg["classes"]), y)
      return z @ mix, y

    x, y = jax.vmap(one)(index)
    return (x - mean_x) / std_x, y

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    """The MLP's logits, with classes >= c masked out."""
    logits = super().logits(params, images)
    return jnp.where(jnp.arange(logits.shape[-1]) < self._cfg["classes"],
                     logits, -1e9)

  def loss(self, params: Any, key: jax.Array, batch: Any) -> jax.Array:
    """Cross-entropy on a minibatch of the task's own set (`batch` unused)."""
    del batch
    index = jax.random.randint(key, (self._family.batch_size,), 0,
                               self._cfg["examples"])
    x, y = self.rows(index)
    return super().loss(params, key, {"image": x, "label": y})


@gin.configurable
class GeneratedTabularFamily(mlp_family.MaskedMLPFamily):
  """Masked MLPs, each on its own generated classification set (module doc)."""

  def __init__(self, examples_range: tuple[int, int] = (64, 1024),
               features_range: tuple[int, int] = (4, 32),
               max_classes: int = 6, batch_size: int = 32,
               class_sep_range: tuple[float, float] = (0.5, 2.0),
               max_label_noise: float = 0.1, name: str | None = None,
               **mlp_kwargs: Any):
    """Builds the family.

    Args:
      examples_range: (low, high) of the log-uniform training-set size.
      features_range: (low, high) of the uniform feature count; high is the
        MLP's input width.
      max_classes: the class count is uniform in [2, max_classes].
      batch_size: examples per training step (drawn with replacement).
      class_sep_range: (low, high) of the log-uniform centroid scale, against
        unit within-cluster noise (lower: harder, more overlap).
      max_label_noise: the replaced-label fraction is uniform in [0, this].
      name: family name; defaults to tabgen_f<max features>_w<max width>_d<max depth>.
      **mlp_kwargs: `MaskedMLPFamily` arguments other than `datasets`.
    """
    low_n, high_n = examples_range
    low_f, high_f = features_range
    if not (1 <= low_n <= high_n and 1 <= low_f <= high_f and max_classes >= 2
            and batch_size >= 1 and 0 <= max_label_noise < 1
            and 0 < class_sep_range[0] <= class_sep_range[1]):
      raise ValueError(
          f"GeneratedTabularFamily needs 1 <= low <= high ranges, max_classes "
          f">= 2, batch_size >= 1, 0 <= max_label_noise < 1, 0 < class_sep "
          f"low <= high; got examples {examples_range}, features "
          f"{features_range}, max_classes {max_classes}, batch_size "
          f"{batch_size}, label noise {max_label_noise}, class_sep "
          f"{class_sep_range}")
    self.examples_range = (int(low_n), int(high_n))
    self.features_range = (int(low_f), int(high_f))
    self.max_classes = int(max_classes)
    self.batch_size = int(batch_size)
    self.class_sep_range = tuple(class_sep_range)
    self.max_label_noise = float(max_label_noise)
    super().__init__(shape=(self.features_range[1], self.max_classes),
                     **mlp_kwargs)
    self._name = name or (f"tabgen_f{high_f}_w{self.max_width}"
                          f"_d{self.max_depth}")

  def sample(self, key: jax.Array) -> mlp_family.TaskCfg:
    k_mlp, k_data, k_n, k_f, k_c, k_sep, k_noise = jax.random.split(key, 7)
    cfg = super().sample(k_mlp)
    cfg.update({
        "data_key": k_data,
        "examples": mlp_family.log_uniform_int(k_n, *self.examples_range),
        "features": jax.random.randint(k_f, (), self.features_range[0],
                                       self.features_range[1] + 1),
        "classes": jax.random.randint(k_c, (), 2, self.max_classes + 1),
        "class_sep": mlp_family.log_uniform(k_sep, *self.class_sep_range),
        "label_noise": jax.random.uniform(k_noise, (), maxval=self.max_label_noise),
    })
    return cfg

  def task_fn(self, cfg: mlp_family.TaskCfg) -> _GeneratedTabularTask:
    return _GeneratedTabularTask(self, cfg)
