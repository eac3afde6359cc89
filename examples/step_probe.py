r"""What does a learned optimizer's step do? A probe on one held-out task.

  python examples/step_probe.py selftrained_nominal_symmetric \
      [digits_mlp_wide_deep] [1000]

Trains the held-out task (`lopt_selftrain.tasks.heldout.SUITE`) with the
optimizer (a shipped name or an exported file) and prints, every 50 steps,
the minibatch loss, the RMS of the gradient and of the update, the cosine
between the update and the weights (> 0: the step grows them), the cosine
between the update and the negative gradient, and the norm of each weight
matrix. docs/heldout_history.md ("Choosing on a validation suite; why the
wide network blows up") uses it to show why the 4 x 256 digits MLP dies,
docs/heldout.md ("Next") why the quadratic stalls near 1e-7.
"""

import sys

import jax
import jax.numpy as jnp

from lopt_selftrain import export, pretrained
from lopt_selftrain.tasks import heldout


def _flat(tree):
  return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(tree)])


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def _cosine(a, b):
  return jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)


def main(optimizer: str, task_name: str = "digits_mlp_wide_deep",
         steps: int = 1000) -> None:
  exported = export.read(pretrained.resolve(optimizer))
  task = heldout.suite_tasks([task_name])[0].build()
  opt = exported.learned_opt.opt_fn(exported.theta)
  state = opt.init(task.init(jax.random.PRNGKey(0)), num_steps=steps)
  data = task.datasets  # None for the quadratic: its loss takes no batch

  @jax.jit
  def step(state, batch):
    params = opt.get_params(state)
    loss, grad = jax.value_and_grad(task.loss)(params, jax.random.PRNGKey(0), batch)
    new = opt.update(state, grad, loss=loss)
    update = _flat(opt.get_params(new)) - _flat(params)
    norms = [jnp.linalg.norm(x) for x in jax.tree_util.tree_leaves(params)
             if x.ndim > 1]
    return (new, loss, _rms(_flat(grad)), _rms(update),
            _cosine(update, _flat(params)), _cosine(update, -_flat(grad)), norms)

  for t in range(steps):
    state, loss, grad_rms, step_rms, with_weights, with_gradient, norms = step(
        state, () if data is None else next(data.train))
    if t % 50 == 0 or t == steps - 1:
      print(f"{t:5d} loss {float(loss):.3g}  rms(g) {float(grad_rms):.2g}  "
            f"rms(step) {float(step_rms):.2g}  cos(step, w) {float(with_weights):+.3f}  "
            f"cos(step, -g) {float(with_gradient):+.3f}  |W| "
            + " ".join(f"{float(n):.1f}" for n in norms), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], *sys.argv[2:3], *(int(a) for a in sys.argv[3:4]))
