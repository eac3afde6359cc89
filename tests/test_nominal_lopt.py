"""NominalMLPLOpt: a nominal Adam step that its MLP modulates, within bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt_selftrain.nominal_lopt import NominalMLPLOpt


def _data():
  return (jax.random.normal(jax.random.PRNGKey(1), (40, 6)),
          jax.random.normal(jax.random.PRNGKey(2), (40, 3)))


def _problem():
  """A least-squares problem with a matrix, a vector and a scalar parameter."""
  a, b = _data()

  def loss(p):
    return jnp.mean((a @ p["w"] + p["b"] + p["s"] - b) ** 2)

  params = {"w": jnp.zeros((6, 3)), "b": jnp.zeros(3), "s": jnp.zeros(())}
  return loss, params


def _least_squares_solution():
  """The exact minimiser of `_problem`'s loss (intercept folded into `b`)."""
  a, b = _data()
  x, *_ = jnp.linalg.lstsq(jnp.concatenate([a, jnp.ones((40, 1))], 1), b)
  return {"w": x[:6], "b": x[6], "s": jnp.zeros(())}


def _run(opt_update, state, loss, get_params, steps):
  losses = []
  for _ in range(steps):
    value, grad = jax.value_and_grad(loss)(get_params(state))
    state = opt_update(state, grad, value)
    losses.append(float(value))
  return state, losses


def _assert_matches_adam(theta, lopt, adam, steps, atol):
  """`steps` steps of the learned optimizer with weights `theta` end where
  optax's `adam` ends on `_problem`."""
  loss, params = _problem()
  opt = lopt.opt_fn(theta)
  state, _ = _run(lambda s, g, v: opt.update(s, g, loss=v),
                  opt.init(params, num_steps=steps), loss, opt.get_params, steps)

  def adam_update(s, g, v):
    p, a = s
    u, a = adam.update(g, a)
    return optax.apply_updates(p, u), a

  (expected, _), _ = _run(adam_update, (params, adam.init(params)), loss,
                          lambda s: s[0], steps)
  for x, y in zip(jax.tree_util.tree_leaves(opt.get_params(state)),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("lr,log_lr_scale", [(1e-3, 1.0), (3e-2, 1.0),
                                             (3e-2, 30.0)])
def test_zero_output_layer_is_exactly_adam(lr, log_lr_scale):
  """With the MLP's last layer at zero, the learned optimizer is optax.adam
  (at initial_lr, however the base rate is stored)."""
  lopt = NominalMLPLOpt(initial_lr=lr, output_init_scale=0.0,
                        log_lr_scale=log_lr_scale)
  _assert_matches_adam(lopt.init(jax.random.PRNGKey(0)), lopt,
                       optax.adam(lr), 50, atol=1e-6)


def test_random_member_descends_and_steps_stay_within_bounds():
  """A random member trains (it starts near Adam), and however large its MLP
  outputs, each step is at most exp(log_lr + R) * (|adam| + 1) per entry."""
  lopt = NominalMLPLOpt(initial_lr=1e-2, output_init_scale=50.0,
                        max_log_lr_change=1.0)
  theta = lopt.init(jax.random.PRNGKey(3))
  loss, params = _problem()
  opt = lopt.opt_fn(theta)
  state = opt.init(params, num_steps=200)
  grad = jax.grad(loss)(params)
  one = opt.update(state, grad)
  # First Adam step: |m_hat / sqrt(v_hat)| = 1 per entry (to eps).
  bound = np.exp(np.log(1e-2) + 1.0) * 2.0
  for x, y in zip(jax.tree_util.tree_leaves(opt.get_params(one)),
                  jax.tree_util.tree_leaves(params)):
    assert np.all(np.abs(np.asarray(x - y)) <= bound * (1 + 1e-5))

  lopt = NominalMLPLOpt(initial_lr=1e-2)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(3)))
  _, losses = _run(jax.jit(lambda s, g, v: opt.update(s, g, loss=v)),
                   opt.init(params, num_steps=200), loss, opt.get_params, 200)
  assert np.all(np.isfinite(losses))
  best = float(loss(_least_squares_solution()))
  assert losses[-1] - best < 0.1 * (losses[0] - best)


def test_schedule_features_see_the_run_length():
  """The fraction-done feature makes the same weights step differently in a
  run of 10 steps than in one of 10000 (a learnable schedule)."""
  lopt = NominalMLPLOpt(output_init_scale=5.0)
  theta = lopt.init(jax.random.PRNGKey(4))
  loss, params = _problem()
  opt = lopt.opt_fn(theta)
  grad = jax.grad(loss)(params)
  short = opt.update(opt.init(params, num_steps=1), grad)
  long = opt.update(opt.init(params, num_steps=10_000), grad)
  assert not np.allclose(short.params["w"], long.params["w"])


def test_rejects_nonpositive_learning_rate_or_scale():
  with pytest.raises(ValueError, match="initial_lr must be > 0"):
    NominalMLPLOpt(initial_lr=0.0)
  with pytest.raises(ValueError, match="log_lr_scale must be > 0"):
    NominalMLPLOpt(log_lr_scale=0.0)


def test_without_direction_correction_steps_are_scaled_adam_steps():
  """direction_correction=False: one MLP output, and each entry's step is
  Adam's direction times a positive factor within exp(log_lr +- R)."""
  lopt = NominalMLPLOpt(initial_lr=1e-2, output_init_scale=50.0,
                        max_log_lr_change=1.0, direction_correction=False)
  theta = lopt.init(jax.random.PRNGKey(3))
  assert theta[f"w{lopt.hidden_layers}"].shape[-1] == 1
  loss, params = _problem()
  opt = lopt.opt_fn(theta)
  grad = jax.grad(loss)(params)
  one = opt.update(opt.init(params, num_steps=200), grad)
  for new, old, g in zip(*(jax.tree_util.tree_leaves(t)
                           for t in (opt.get_params(one), params, grad))):
    # First Adam step: the direction is sign(g) (to eps).
    factor = np.asarray(old - new) / np.sign(np.asarray(g))
    assert np.all(factor >= np.exp(np.log(1e-2) - 1.0) * (1 - 1e-4))
    assert np.all(factor <= np.exp(np.log(1e-2) + 1.0) * (1 + 1e-4))


@pytest.mark.parametrize("gate_logit,b2", [(-50.0, 0.99), (50.0, 0.999)])
def test_gate_picks_adam_at_beta2_or_long_beta2(gate_logit, b2):
  """With the step-size and correction outputs at zero and the gate shut
  (open), the learned optimizer is optax.adam at beta2 (long_beta2)."""
  lopt = NominalMLPLOpt(initial_lr=3e-2, output_init_scale=0.0, beta2=0.99,
                        long_beta2=0.999, gate_scale=10.0)
  theta = lopt.init(jax.random.PRNGKey(0))
  last = f"b{lopt.hidden_layers}"
  assert theta[last].shape == (3,)
  theta[last] = theta[last].at[2].set(gate_logit / 10.0)  # x gate_scale
  _assert_matches_adam(theta, lopt, optax.adam(3e-2, b2=b2), 200, atol=1e-5)


def test_relative_correction_fades_with_adams_direction():
  """After one large gradient and 60 zero ones Adam's direction is ~0.9^60 of
  its first step: a relative correction's step shrinks with it (each entry
  within exp(log_lr + R) * (|adam| + rms(adam))), a unit one does not."""
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  zero = jax.tree_util.tree_map(jnp.zeros_like, grad)
  adam = optax.scale_by_adam()
  adam_state = adam.init(params)
  steps = {}
  for relative in (True, False):
    lopt = NominalMLPLOpt(initial_lr=1e-2, output_init_scale=50.0,
                          max_log_lr_change=1.0, relative_correction=relative)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(5)))
    state = opt.init(params, num_steps=100)
    for g in [grad] + [zero] * 60:
      before = opt.get_params(state)
      state = opt.update(state, g)
    steps[relative] = jax.tree_util.tree_map(
        lambda a, b: np.asarray(a - b), before, opt.get_params(state))
  for g in [grad] + [zero] * 60:
    direction, adam_state = adam.update(g, adam_state)
  for step, d in zip(jax.tree_util.tree_leaves(steps[True]),
                     jax.tree_util.tree_leaves(direction)):
    d = np.asarray(d)
    bound = np.exp(np.log(1e-2) + 1.0) * (np.abs(d) + np.sqrt(np.mean(d**2)))
    assert np.all(np.abs(step) <= bound * (1 + 1e-4) + 1e-12)
  unit = np.concatenate([np.ravel(s) for s in jax.tree_util.tree_leaves(steps[False])])
  relative = np.concatenate([np.ravel(s) for s in jax.tree_util.tree_leaves(steps[True])])
  assert np.sqrt(np.mean(unit**2)) > 100 * np.sqrt(np.mean(relative**2))


def _params_after(lopt, theta, grads):
  """Parameters after `grads` are applied one after another to `_problem`'s."""
  _, params = _problem()
  opt = lopt.opt_fn(theta)
  state = opt.init(params, num_steps=100)
  for g in grads:
    state = opt.update(state, g)
  return opt.get_params(state)


@pytest.mark.parametrize("signal", ["adam_rms", "abs_ratio"])
@pytest.mark.parametrize("fade_tau,b2", [(1e-9, 0.99), (1e9, 0.999)])
def test_fade_tau_picks_adam_at_beta2_or_fade_beta2(fade_tau, b2, signal):
  """With the MLP's outputs at zero, the rule keeps Adam at beta2 (tiny
  tau: keep = 1) or falls back to Adam at fade_beta2 (huge tau)."""
  lopt = NominalMLPLOpt(initial_lr=1e-2, beta2=0.99, fade_tau=fade_tau,
                        fade_signal=signal)
  theta = lopt.init(jax.random.PRNGKey(0))
  last = len([k for k in theta if k.startswith("w")]) - 1
  theta = {**theta, f"w{last}": jnp.zeros_like(theta[f"w{last}"]),
           f"b{last}": jnp.zeros_like(theta[f"b{last}"])}
  _assert_matches_adam(theta, lopt, optax.adam(1e-2, b2=b2), 200, atol=1e-5)


def _same_as_without_fade(signal, fade_tau, grads):
  """Whether a random member (correction included) ends where it ends
  without the rule after `grads`."""
  kwargs = {"initial_lr": 1e-2, "output_init_scale": 50.0, "beta2": 0.99}
  theta = NominalMLPLOpt(**kwargs).init(jax.random.PRNGKey(5))
  plain = NominalMLPLOpt(**kwargs)
  faded = NominalMLPLOpt(fade_tau=fade_tau, fade_signal=signal, **kwargs)
  return all(np.allclose(x, y, rtol=1e-6, atol=1e-8) for x, y in zip(
      jax.tree_util.tree_leaves(_params_after(plain, theta, grads)),
      jax.tree_util.tree_leaves(_params_after(faded, theta, grads))))


@pytest.mark.parametrize("signal", ["adam_rms", "abs_ratio"])
def test_fade_tau_changes_nothing_while_gradients_agree(signal):
  """Under one repeated gradient either signal is 1: the step is as without
  the rule; where the gradient flips sign every step it is not."""
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  flipping = [jax.tree_util.tree_map(lambda x, i=i: (-1.0) ** i * x, grad)
              for i in range(20)]
  assert _same_as_without_fade(signal, 0.5, [grad] * 20)
  assert not _same_as_without_fade(signal, 0.5, flipping)


def test_abs_ratio_keeps_the_step_under_rare_large_gradients():
  """Gradients that keep their signs, 1000x larger every 25th step (heavy-
  tailed minibatch gradients): v is set by the spikes, so the RMS of Adam's
  direction falls to ~0.05 before each spike and that rule falls back at
  tau 0.1; the L1 ratio stays above ~0.25 and keeps the step."""
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  scales = [1e3 if i % 25 == 24 else 1.0 for i in range(100)]
  grads = [jax.tree_util.tree_map(lambda x, c=c: c * x, grad) for c in scales]
  assert _same_as_without_fade("abs_ratio", 0.1, grads)
  assert not _same_as_without_fade("adam_rms", 0.1, grads)


@pytest.mark.parametrize("signal", ["hypergradient", "hypergradient_snr"])
def test_hypergradient_at_a_tiny_rate_changes_nothing(signal):
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  flipping = [jax.tree_util.tree_map(lambda x, i=i: (-1.0) ** i * x, grad)
              for i in range(60)]
  assert _same_as_without_fade(signal, 1e-9, flipping)
  assert not _same_as_without_fade(signal, 0.5, flipping)


def _sign_descent_member(lopt):
  """Weights whose step-size output is 0 and whose correction is
  tanh(10 g / rms(g)) (sign-symmetric, so the MLP's two passes give
  relu(10 x) - relu(-10 x)): a unit-scale sign-descent step that overshoots
  once near a minimum."""
  theta = {n: v if n == "log_lr" else jnp.zeros_like(v)
           for n, v in lopt.init(jax.random.PRNGKey(0)).items()}
  theta["w0"] = theta["w0"].at[0, 0].set(10.0)  # feature 0: the gradient
  theta["w1"] = theta["w1"].at[0, 0].set(1.0)
  theta["w2"] = theta["w2"].at[0, 1].set(1.0)  # output 1: the correction
  return theta


def _sign_descent_run(signal, noise=0.0, steps=1000):
  """(final excess loss over the least-squares minimum, final log keep) of
  `_sign_descent_member` on `_problem`, at rate 0.3 (no rule: `signal`
  None), its gradients plus `noise` x N(0, 1) (seeded)."""
  loss, params = _problem()
  kwargs = {"initial_lr": 1e-2, "beta2": 0.99, "param_feature": False,
            "sign_symmetric": True}
  lopt = NominalMLPLOpt(**kwargs, **({} if signal is None else {
      "fade_tau": 0.3, "fade_signal": signal}))
  opt = lopt.opt_fn(_sign_descent_member(lopt))

  @jax.jit
  def step(state, key):
    grad = jax.grad(loss)(opt.get_params(state))
    keys = dict(zip(sorted(grad), jax.random.split(key, len(grad))))
    return opt.update(state, jax.tree_util.tree_map(
        lambda g, k: g + noise * jax.random.normal(k, g.shape), grad, keys))

  state = opt.init(params, num_steps=steps)
  for i, key in enumerate(jax.random.split(jax.random.PRNGKey(0), steps)):
    state = step(state, key)
    if i == 14 and signal is not None and not noise:  # excess 0.21 -> 0.002
      assert float(state.log_keep["w"]) == 0.0
  excess = float(loss(opt.get_params(state))) - float(
      loss(_least_squares_solution()))
  return excess, state.log_keep


@pytest.mark.parametrize("signal", ["hypergradient", "hypergradient_snr"])
def test_hypergradient_keeps_a_correction_that_helps_and_drops_one_that_overshoots(
    signal):
  """On least squares, the sign-descent correction stalls 4e-4 above the
  minimum without the rule. With it, keep stays 1 on the weight matrix while
  the correction still lowers the loss (its first 15 steps) and falls once
  it overshoots, so the run ends at the minimum."""
  stalled, _ = _sign_descent_run(None)
  excess, log_keep = _sign_descent_run(signal)
  assert stalled > 1e-4
  assert excess < 1e-2 * stalled
  assert float(log_keep["w"]) < -1.0


def test_hypergradient_snr_does_not_follow_a_noise_dominated_cosine():
  """Gradient noise 1.0 (the gradients near the minimum are ~1e-2): the
  one-step cosine is mostly noise with a negative mean (the short-horizon
  bias), and the plain rule drops keep to e^-4 on a tensor; weighted by
  the cosine's signal fraction, keep stays above e^-1 on every tensor."""
  _, plain = _sign_descent_run("hypergradient", noise=1.0)
  _, snr = _sign_descent_run("hypergradient_snr", noise=1.0)
  assert min(float(v) for v in plain.values()) < -3.0
  assert min(float(v) for v in snr.values()) > -1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"long_beta2": 1.0}, "long_beta2 must be in"),
    ({"long_beta2": 0.999, "relative_correction": True}, "exclude each other"),
    ({"long_beta2": 0.999, "direction_correction": False}, "long_beta2 needs"),
    ({"long_beta2": 0.999, "gate_scale": 0.0}, "gate_scale must be > 0"),
    ({"gate_scale": 10.0}, "gate_scale needs long_beta2"),
    ({"fade_tau": 0.0}, "fade_tau must be > 0"),
    ({"fade_tau": 0.3, "relative_correction": True}, "excludes"),
    ({"fade_tau": 0.3, "long_beta2": 0.999}, "excludes"),
    ({"fade_beta2": 1.0}, "fade_beta2 must be in"),
    ({"fade_tau": 0.3, "fade_signal": "rms"}, "fade_signal must be one of"),
    ({"fade_signal": "abs_ratio"}, "fade_signal needs fade_tau"),
    ({"fade_signal": "hypergradient"}, "fade_signal needs fade_tau"),
    ({"fade_signal": "hypergradient_snr"}, "fade_signal needs fade_tau")])
def test_long_moment_flag_misuse_is_an_error(kwargs, match):
  """The gate (`long_beta2`) and the fall-back (`fade_tau`)."""
  with pytest.raises(ValueError, match=match):
    NominalMLPLOpt(**kwargs)


@pytest.mark.parametrize("flag", ["relative_correction", "tangential_correction"])
def test_correction_flags_need_a_correction(flag):
  with pytest.raises(ValueError, match=f"{flag} needs"):
    NominalMLPLOpt(direction_correction=False, **{flag: True})


def test_tangential_correction_only_removes_the_radial_part():
  """Same weights, same gradients: the step with a tangential correction
  differs from the plain one by a multiple of each weight tensor (the
  correction's radial part, which is not zero here), so it leaves each
  tensor's norm unchanged to first order except through Adam's direction."""
  loss, params = _problem()
  params = jax.tree_util.tree_map(
      lambda p: p + 0.1 + 0.05 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape), params)
  grad = jax.grad(loss)(params)
  steps = []
  for tangential in (False, True):
    lopt = NominalMLPLOpt(output_init_scale=5.0, tangential_correction=tangential)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(8)))
    new = opt.get_params(opt.update(opt.init(params, num_steps=100), grad))
    steps.append(jax.tree_util.tree_map(lambda a, b: np.asarray(a - b, np.float64),
                                        params, new))
  for p, plain, tangential in zip(*(jax.tree_util.tree_leaves(t) for t in
                                    (params, *steps))):
    p, diff = np.ravel(np.asarray(p, np.float64)), np.ravel(plain - tangential)
    if p.size == 1:  # a scalar's only direction is radial: no correction left
      continue
    assert np.linalg.norm(diff) > 1e-4 * np.linalg.norm(plain)
    residual = diff - diff @ p / (p @ p) * p
    assert np.linalg.norm(residual) <= 1e-3 * np.linalg.norm(diff)


@pytest.mark.parametrize("param_feature", [True, False])
def test_param_feature_decides_whether_steps_depend_on_the_weights(param_feature):
  """The same gradients from two different points: the same step without the
  parameter feature (to float32 rounding of p - step), different with it."""
  lopt = NominalMLPLOpt(output_init_scale=5.0, param_feature=param_feature)
  theta = lopt.init(jax.random.PRNGKey(6))
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  moved = jax.tree_util.tree_map(lambda p: p + 1.0 + jnp.arange(p.size).reshape(p.shape),
                                 params)
  opt = lopt.opt_fn(theta)
  steps = [jax.tree_util.tree_map(
      lambda a, b: a - b, p, opt.get_params(opt.update(opt.init(p, num_steps=100), grad)))
           for p in (params, moved)]
  same = all(np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(
      *(jax.tree_util.tree_leaves(s) for s in steps)))
  assert same != param_feature
  width = NominalMLPLOpt(param_feature=True).init(jax.random.PRNGKey(0))["w0"].shape[0]
  assert theta["w0"].shape[0] == width - (not param_feature)


@pytest.mark.parametrize("sign_symmetric", [True, False])
@pytest.mark.parametrize("long_beta2", [None, 0.999])
def test_sign_symmetric_steps_are_odd(sign_symmetric, long_beta2):
  """Flipping the problem (weights and gradients) flips a sign-symmetric
  step exactly, as it does Adam's (the gate is even); a plain member's step
  does not."""
  lopt = NominalMLPLOpt(output_init_scale=5.0, sign_symmetric=sign_symmetric,
                        long_beta2=long_beta2)
  opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(7)))
  loss, params = _problem()
  params = jax.tree_util.tree_map(lambda p: p + 0.3, params)
  grad = jax.grad(loss)(params)

  def step(p, g):
    state = opt.init(p, num_steps=100)
    for _ in range(3):
      state = opt.update(state, g)
    return jax.tree_util.tree_map(lambda a, b: a - b, p, opt.get_params(state))

  neg = lambda t: jax.tree_util.tree_map(lambda x: -x, t)  # noqa: E731
  up, down = step(params, grad), step(neg(params), neg(grad))
  odd = all(np.allclose(a, -b, rtol=1e-4, atol=1e-6) for a, b in zip(
      jax.tree_util.tree_leaves(up), jax.tree_util.tree_leaves(down)))
  assert odd == sign_symmetric


def test_reference_fan_in_shrinks_only_wider_tensors_steps():
  """muP's rule beyond the reference width: the (6, 3) matrix (fan-in 6)
  steps 2/6 as far with reference_fan_in=2, the vector and the scalar as far;
  a reference wider than every tensor changes nothing."""
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  steps = {}
  for ref in (None, 2, 6):
    lopt = NominalMLPLOpt(output_init_scale=5.0, reference_fan_in=ref)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(9)))
    new = opt.get_params(opt.update(opt.init(params, num_steps=100), grad))
    steps[ref] = jax.tree_util.tree_map(lambda a, b: np.asarray(a - b), params, new)
  np.testing.assert_allclose(steps[2]["w"], steps[None]["w"] * 2 / 6, rtol=1e-5)
  for name in ("b", "s"):
    np.testing.assert_array_equal(steps[2][name], steps[None][name])
  for name in ("w", "b", "s"):
    np.testing.assert_array_equal(steps[6][name], steps[None][name])
  with pytest.raises(ValueError, match="reference_fan_in must be >= 1"):
    NominalMLPLOpt(reference_fan_in=0)


def test_snr_features_see_whether_gradients_agree_from_step_to_step():
  """The two per-tensor SNR inputs (the last rows of the first layer) are
  log RMS of Adam's directions: 0 after one step (Adam's direction is then
  sign(g)), so their weights do not matter; after gradients that flip sign
  every step they are well below 0 and the weights change the step."""
  lopt = NominalMLPLOpt(output_init_scale=5.0, snr_features=True)
  theta = lopt.init(jax.random.PRNGKey(10))
  blind = dict(theta, w0=theta["w0"].at[-2:].set(0.0))
  assert theta["w0"].shape[0] == NominalMLPLOpt().init(
      jax.random.PRNGKey(0))["w0"].shape[0] + 2
  loss, params = _problem()
  grad = jax.grad(loss)(params)

  def step(t, signs):
    opt = lopt.opt_fn(t)
    state = opt.init(params, num_steps=100)
    for sign in signs:
      state = opt.update(state, jax.tree_util.tree_map(lambda g, s=sign: s * g, grad))
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a, b: a - b, params, opt.get_params(state)))])

  np.testing.assert_allclose(step(theta, [1.0]), step(blind, [1.0]), rtol=1e-5,
                             atol=1e-9)
  flips = [(-1.0) ** i for i in range(9)]
  assert not np.allclose(step(theta, flips), step(blind, flips), rtol=1e-3)


@pytest.mark.parametrize("num_steps,floor,schedule", [
    (2, 0.0, 0.5), (4, 0.0, 0.5 * (1 + np.cos(np.pi / 4))), (1, 0.0, 0.0),
    (1, 0.1, 0.0), (2, 0.25, 0.5)])
def test_cosine_decay_scales_the_step_by_the_schedule(num_steps, floor, schedule):
  """Step t of a run of num_steps is a + (1 - a) * 0.5 * (1 + cos(pi t /
  num_steps)) times the undecayed one (the first step here; a, the floor, at
  the run's end)."""
  loss, params = _problem()
  grad = jax.grad(loss)(params)
  steps = []
  for decay in (False, True):
    lopt = NominalMLPLOpt(output_init_scale=5.0, cosine_decay=decay,
                          cosine_decay_floor=floor)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(11)))
    new = opt.get_params(opt.update(opt.init(params, num_steps=num_steps), grad))
    steps.append(jax.tree_util.tree_map(lambda a, b: np.asarray(a - b), params, new))
  factor = floor + (1 - floor) * schedule
  for plain, decayed in zip(*(jax.tree_util.tree_leaves(s) for s in steps)):
    np.testing.assert_allclose(decayed, factor * plain, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("floor", [-0.1, 1.5])
def test_cosine_decay_floor_outside_0_1_is_an_error(floor):
  with pytest.raises(ValueError, match="cosine_decay_floor must be in"):
    NominalMLPLOpt(cosine_decay=True, cosine_decay_floor=floor)
