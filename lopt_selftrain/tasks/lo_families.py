"""Registers lo's task families and fixed tasks with gin by importing them.

lo declares its tasks `gin.configurable`, but gin only knows a configurable once
its module is imported; importing this module (done by `lopt_selftrain.tasks`)
makes the names below usable from our .gin files, e.g.
`@FixedDimQuadraticFamily()`, `@ParametricImageConv()`.

A fixed lo `Task` becomes a one-task family with lo's gin-registered
`single_task_to_family`; give it a `name`, since lo's fixed image tasks all
report the private class name `_MLPImageTask`:

    fmnist8/single_task_to_family.task = @ImageMLP_FashionMnist8_Relu32()
    fmnist8/single_task_to_family.name = "ImageMLP_FashionMnist8_Relu32"
    ... @fmnist8/single_task_to_family() ...

Status of lo 0.0.1's task modules on this stack (JAX 0.10, after
`lopt_selftrain.compat` restored the removed names):

Import and are registered here:
  tasks.quadratics (FixedDimQuadraticFamily, QuadraticTask, ...),
  tasks.fixed.image_mlp, tasks.fixed.image_mlp_ae, tasks.fixed.conv,
  tasks.parametric.image_conv, tasks.parametric.image_mlp_ae,
  tasks.parametric.image_resnet, tasks.task_augmentation.
  The image ones need their TFDS dataset prepared (see `tfds_data`); lo's fixed
  image tasks read tfds' default data_dir. Checked under a vmapped inner step:
  ParametricImageConv, ParametricImageResNet, ReparamWeightsFamily and
  FixedDimQuadraticFamily work. ParametricImageMLPAE imports but cannot be
  meta-trained: its `sample` indexes a Python list with a traced integer, so it
  fails under the `vmap` lo's truncated unroll applies to `sample`. lo's fixed
  image tasks are only gin-parsed here, not run: there is no TFDS data offline,
  and their loader (`tfds.load(..., batch_size=-1)`) aborts under tfds' mock.

Do not import (so not registered):
  tasks.parametric.image_mlp: imports `learned_optimization.time_filter`,
    which the lo 0.0.1 wheel does not ship (ParametricImageMLP is covered by
    our `MaskedMLPFamily`).
  tasks.fixed.resnet, tasks.es_wrapper, tasks.fixed.es_wrapped: need `chex`,
    which is not installed; they import once chex is installed (checked with
    chex 0.1.92), at the cost of a new dependency.
  tasks.datasets.language, tasks.fixed.rnn_lm, tasks.parametric.lm_rnn: need
    `seqio` (and language data from TFDS).
  tasks.fixed.transformer_lm, tasks.parametric.lm_transformer: need `chex`
    and `seqio`.
  tasks.parametric.image_mlp_vae: needs `tensorflow_probability`.
"""

# Imported for their gin registrations only.
from learned_optimization.tasks import quadratics, task_augmentation  # noqa: F401
from learned_optimization.tasks.fixed import conv, image_mlp, image_mlp_ae  # noqa: F401
from learned_optimization.tasks.parametric import image_conv, image_resnet  # noqa: F401
from learned_optimization.tasks.parametric import (  # noqa: F401
  image_mlp_ae as parametric_image_mlp_ae,
)
