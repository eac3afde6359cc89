import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_selftrain import export

model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(1)])
x = jax.random.normal(jax.random.PRNGKey(0), (128, 8))
y = jnp.sin(x.sum(axis=1, keepdims=True))
params = model.init(jax.random.PRNGKey(1), x)
opt = export.load_optax("optimizer.lopt", num_steps=300)
opt_state = opt.init(params)


@jax.jit
def train_step(params, opt_state):
  loss, grads = jax.value_and_grad(
      lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
  updates, opt_state = opt.update(grads, opt_state, params, loss=loss)
  return optax.apply_updates(params, updates), opt_state, loss


for _ in range(300):
  params, opt_state, loss = train_step(params, opt_state)
print(f"final training loss: {loss:.4f}")
