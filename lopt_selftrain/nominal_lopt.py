"""A learned optimizer with a nominal Adam step: `NominalMLPLOpt`.

lo's per-parameter MLP optimizers (`MLPLOpt` and kin) output the whole step, so
a randomly initialised one takes tiny random steps and self-training has to
discover descent, step size and schedule from nothing; the ones we trained stop
at 1e-3..1e-2 training loss where tuned Adam reaches 1e-7
(docs/heldout_history.md). Here, as in lo's `MLPNomLOpt` (HEAD only) and
Celo/VeLO, the MLP *modulates* a nominal Adam step instead:

    step = exp(log_lr + R * tanh(n / R)) * (adam_direction + tanh(d) * s)

(optionally times a cosine decay over the run, `cosine_decay`).
`log_lr` is one learned scalar; `n` (log step-size modulation, bounded to
+-R) and `d` (bounded direction correction; its scale `s` is 1, or the RMS
of Adam's direction over the tensor; optionally with its part along the
tensor removed) are per-parameter outputs of an MLP
on normalised per-parameter features (gradient, parameter, two momenta, Adam
directions) plus unnormalised global ones (fraction of the run done, so it can
learn a schedule from `num_steps`; iteration; the tensor's log fan-in, so it can
learn width-dependent step sizes as muP prescribes by hand; optionally the
tensor's signal-to-noise ratio, see `snr_features`). A random member is
Adam at `initial_lr` with random per-parameter perturbations of its step size
and direction; every one of those weights is meta-trained, by the population
itself in self-training.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import gin
import jax
import jax.numpy as jnp
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base

_NUM_PARAM_FEATURES = 7
_TIMESCALES = (10.0, 100.0, 1000.0, 10000.0)
_NUM_GLOBAL_FEATURES = 3 + len(_TIMESCALES)  # fraction done, its tanh, timescales, fan-in
_NUM_SNR_FEATURES = 2  # log RMS over the tensor of the fast and slow Adam directions
_FADE_SIGNALS = ("adam_rms", "abs_ratio", "hypergradient", "hypergradient_snr")
_SNR_BETA = 0.98  # "hypergradient_snr": EMAs of the cosine over ~50 steps


@flax.struct.dataclass
class NominalMLPLOptState:
  """Inner optimizer state: lo's `.params`/`.state`/`.iteration` plus moments."""
  params: Any
  state: Any
  mom_fast: Any
  mom_slow: Any
  rms: Any
  rms_long: Any  # at `_long_decay`; None without `long_beta2` or `fade_tau`
  abs_mean: Any  # EMA of |g| at beta2; None but for fade_signal "abs_ratio"
  log_keep: Any  # per tensor; None but for the "hypergradient*" fade signals
  keep_grad: Any  # d step / d keep of the last step; as log_keep
  cos_moments: Any  # per tensor, EMAs of cos and cos^2; "hypergradient_snr"
  iteration: jnp.ndarray
  num_steps: jnp.ndarray


def _normalise(x: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
  """Each feature (last axis) scaled to unit second moment over the tensor."""
  axes = tuple(range(x.ndim - 1))
  return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def _rms(x: jnp.ndarray) -> jnp.ndarray:
  """Root mean square over the whole tensor."""
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def _fan_in(shape: tuple[int, ...]) -> int:
  """A tensor's fan-in: the product of all axes but the last (1 for biases
  and scalars)."""
  return math.prod(shape[:-1]) if len(shape) > 1 else 1


def _remove_component(x: jnp.ndarray, along: jnp.ndarray) -> jnp.ndarray:
  """x minus its projection on `along` (x itself where `along` is zero)."""
  along = along.astype(x.dtype)
  return x - jnp.vdot(x, along) / jnp.maximum(jnp.vdot(along, along), 1e-30) * along


@gin.configurable
class NominalMLPLOpt(lopt_base.LearnedOptimizer):
  """Per-parameter MLP that modulates a nominal Adam step (module docstring).

  Args:
    initial_lr: Adam learning rate of a freshly initialised member.
    hidden_size: width of the MLP's hidden layers.
    hidden_layers: number of hidden (ReLU) layers.
    max_log_lr_change: R, the bound on the per-parameter log step-size
      modulation: steps stay within exp(+-R) of the learned base rate.
    output_init_scale: scale of the last layer's random init relative to
      1/sqrt(fan_in), so a random member starts near (not at) Adam.
    beta1, beta2, slow_beta: decays of the nominal Adam moments and of the
      slower momentum the MLP also sees.
    eps: Adam's epsilon.
    log_lr_scale: theta stores log_lr / log_lr_scale, so that an outer step,
      which moves every weight by about the same amount, can move the base
      rate by more than ~1e-3 in log.
    direction_correction: whether the MLP also adds the bounded direction
      `tanh(d)` to Adam's. False: it only rescales Adam's step per parameter
      (one output), so every step points where Adam's does.
    relative_correction: scale `tanh(d)` by the RMS over the tensor of Adam's
      direction, so the correction fades as Adam's steps do when a run
      converges. Only with `direction_correction`.
    long_beta2: None, or the decay of a second, long-memory second moment
      and a learned per-parameter gate (a third MLP output, through a
      sigmoid) between Adam's direction at `beta2` with the unit-scale
      correction (gate 0) and Adam's direction at `long_beta2` with the
      correction scaled by that direction's RMS (gate 1). The MLP also sees
      the log ratio of the two directions' RMS per tensor.
    gate_scale: multiplies the gate's logit. Only with `long_beta2`.
    fade_tau, fade_beta2, fade_signal: None, or a fixed rule between the
      same two modes: per tensor, keep = min(1, signal / fade_tau); the
      direction is keep x Adam's at `beta2` + (1 - keep) x Adam's at
      `fade_beta2`, and the correction is scaled by keep. The signal
      measures whether the recent gradients still point one way relative to
      their size over ~1 / (1 - beta2) steps: "adam_rms", the RMS of Adam's
      direction m / sqrt(v); "abs_ratio", sum |m| / sum EMA_beta2(|g|), its
      L1 twin. Both are 1 under a repeated gradient and fall where
      gradients flip or shrink geometrically, as on a quadratic near the
      floor a unit-scale step holds it at; rare large minibatch gradients
      pull the RMS down (below 5e-4 on a digits MLP whose gradients keep
      their signs), the L1 ratio far less. "hypergradient": keep is state,
      exp(log keep) per tensor, and log keep <- min(0, log keep + fade_tau
      x cos(g_t, d step_{t-1} / d keep)): hypergradient descent (Baydin et
      al., 2018) on the mode, fade_tau its rate. It asks whether the last
      step's keep-dependent part still lowered the loss, so it keeps the
      correction while a net is still being fitted, where gradients shrink
      geometrically as they do on a quadratic and both signals above fall.
      Minibatch noise biases it towards falling back (greedy step-size
      tuning's short-horizon bias): on iris it drops the keep early.
      "hypergradient_snr": the same, each move weighted by the cosine's
      signal fraction EMA(cos)^2 / EMA(cos^2) over ~50 steps: ~1 where the
      cosine is steady (a quadratic), small where noise dominates it (a
      tiny minibatched set), and 0 at the start, before it has a history.
    param_feature: whether the MLP sees the parameter value (with it, the
      shipped optimizers learned to grow the weights).
    sign_symmetric: make the step odd in the per-parameter features, as
      SGD's and Adam's are in the gradient: the MLP runs on the features and
      on them with the odd ones (all but 1/sqrt(v)) negated; the step-size
      modulation is the even part of its first output, the correction the
      odd part of its second. Where the gradients are noise or zero the
      correction then averages to zero.
    tangential_correction: remove from the correction its component along
      the parameter tensor, so it can turn a tensor but not grow or shrink
      its norm (to first order); a norm then changes only through Adam's
      direction.
    reference_fan_in: None, or a fan-in from which on a tensor with fan-in
      n takes steps `reference_fan_in / n` times as large (muP's rule for
      Adam: a layer's output moves by the same amount at any width).
    snr_features: whether the MLP also sees, per tensor, the log RMS of
      Adam's direction and of its slow-momentum twin: near 1 where gradients
      agree from step to step, about sqrt((1 - beta) / (1 + beta)) where
      they are noise (its per-parameter features, normalised per tensor,
      hide this).
    cosine_decay: multiply every step by 0.5 * (1 + cos(pi * t /
      num_steps)) (0 from `num_steps` on: give the run's length).
    cosine_decay_floor: with `cosine_decay`, the factor the decay ends at
      (optax's `alpha`): a + (1 - a) * 0.5 * (1 + cos(...)).

  Why each flag exists and what it measured: docs/architectures.md
  ("NominalMLPLOpt's flags").
  """

  def __init__(self, initial_lr: float = 1e-3, hidden_size: int = 16,
               hidden_layers: int = 2, max_log_lr_change: float = 3.0,
               output_init_scale: float = 0.1, beta1: float = 0.9,
               beta2: float = 0.999, slow_beta: float = 0.99,
               eps: float = 1e-8, log_lr_scale: float = 1.0,
               direction_correction: bool = True,
               relative_correction: bool = False,
               long_beta2: float | None = None, gate_scale: float = 1.0,
               fade_tau: float | None = None, fade_beta2: float = 0.999,
               fade_signal: str = "adam_rms",
               param_feature: bool = True, sign_symmetric: bool = False,
               tangential_correction: bool = False,
               reference_fan_in: int | None = None,
               snr_features: bool = False, cosine_decay: bool = False,
               cosine_decay_floor: float = 0.0):
    super().__init__()
    if not initial_lr > 0:
      raise ValueError(f"NominalMLPLOpt.initial_lr must be > 0, got {initial_lr}")
    if not log_lr_scale > 0:
      raise ValueError(
          f"NominalMLPLOpt.log_lr_scale must be > 0, got {log_lr_scale}")
    self.initial_lr = initial_lr
    self.hidden_size = hidden_size
    self.hidden_layers = hidden_layers
    self.max_log_lr_change = max_log_lr_change
    self.output_init_scale = output_init_scale
    self.beta1, self.beta2, self.slow_beta = beta1, beta2, slow_beta
    self.eps = eps
    self.log_lr_scale = log_lr_scale
    self.direction_correction = direction_correction
    self.relative_correction = relative_correction
    if long_beta2 is not None:
      if not 0.0 < long_beta2 < 1.0:
        raise ValueError(f"NominalMLPLOpt.long_beta2 must be in (0, 1) or None, "
                         f"got {long_beta2}")
      if relative_correction:
        raise ValueError("NominalMLPLOpt.long_beta2 and relative_correction "
                         "exclude each other (the gate sets the scale)")
    self.long_beta2 = long_beta2
    if not gate_scale > 0:
      raise ValueError(f"NominalMLPLOpt.gate_scale must be > 0, got {gate_scale}")
    if gate_scale != 1.0 and long_beta2 is None:
      raise ValueError("NominalMLPLOpt.gate_scale needs long_beta2")
    self.gate_scale = gate_scale
    if fade_tau is not None:
      if not fade_tau > 0:
        raise ValueError(f"NominalMLPLOpt.fade_tau must be > 0 or None, got {fade_tau}")
      if relative_correction or long_beta2 is not None:
        raise ValueError("NominalMLPLOpt.fade_tau excludes relative_correction "
                         "and long_beta2 (each sets the step's mode)")
    if not 0.0 < fade_beta2 < 1.0:
      raise ValueError(f"NominalMLPLOpt.fade_beta2 must be in (0, 1), got {fade_beta2}")
    if fade_signal not in _FADE_SIGNALS:
      raise ValueError(f"NominalMLPLOpt.fade_signal must be one of {_FADE_SIGNALS}, "
                       f"got {fade_signal!r}")
    if fade_signal != "adam_rms" and fade_tau is None:
      raise ValueError("NominalMLPLOpt.fade_signal needs fade_tau")
    self.fade_tau, self.fade_beta2 = fade_tau, fade_beta2
    self.fade_signal = fade_signal
    self.param_feature = param_feature
    self.sign_symmetric = sign_symmetric
    self.tangential_correction = tangential_correction
    if reference_fan_in is not None and not reference_fan_in >= 1:
      raise ValueError(f"NominalMLPLOpt.reference_fan_in must be >= 1 or None, "
                       f"got {reference_fan_in}")
    self.reference_fan_in = reference_fan_in
    self.snr_features = snr_features
    self.cosine_decay = cosine_decay
    if not 0.0 <= cosine_decay_floor <= 1.0:
      raise ValueError(f"NominalMLPLOpt.cosine_decay_floor must be in [0, 1], "
                       f"got {cosine_decay_floor}")
    self.cosine_decay_floor = cosine_decay_floor
    for flag in ("relative_correction", "long_beta2", "tangential_correction"):
      if getattr(self, flag) not in (None, False) and not direction_correction:
        raise ValueError(f"NominalMLPLOpt.{flag} needs direction_correction=True")

  def init(self, key: jax.Array) -> lopt_base.MetaParams:
    """Random MLP weights (truncated normal, 1/sqrt(fan_in)) and log_lr."""
    sizes = ([self._num_param_features + self._num_global_features]
             + [self.hidden_size] * self.hidden_layers
             + [self._num_outputs])
    theta = {"log_lr": jnp.asarray(math.log(self.initial_lr) / self.log_lr_scale,
                                   jnp.float32)}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
      scale = (self.output_init_scale if i == len(sizes) - 2 else 1.0)
      theta[f"w{i}"] = scale / math.sqrt(fan_in) * jax.random.truncated_normal(
          k, -2.0, 2.0, (fan_in, fan_out), jnp.float32)
      theta[f"b{i}"] = jnp.zeros((fan_out,), jnp.float32)
    return theta

  @property
  def _num_param_features(self) -> int:
    return _NUM_PARAM_FEATURES - (not self.param_feature)

  @property
  def _num_global_features(self) -> int:
    return (_NUM_GLOBAL_FEATURES + _NUM_SNR_FEATURES * self.snr_features
            + (self.long_beta2 is not None))

  @property
  def _long_decay(self) -> float | None:
    """Decay of the second, long-memory second moment: the gate's
    `long_beta2` or the fall-back's `fade_beta2` (they exclude each other)."""
    if self.long_beta2 is not None:
      return self.long_beta2
    return None if self.fade_tau is None else self.fade_beta2

  @property
  def _abs_ratio(self) -> bool:
    return self.fade_tau is not None and self.fade_signal == "abs_ratio"

  @property
  def _hypergradient(self) -> bool:
    return self.fade_tau is not None and self.fade_signal.startswith(
        "hypergradient")

  @property
  def _cos_snr(self) -> bool:
    return self.fade_tau is not None and self.fade_signal == "hypergradient_snr"

  @property
  def _num_outputs(self) -> int:
    """Step-size modulation, then the correction and the gate if used."""
    return 1 + self.direction_correction + (self.long_beta2 is not None)

  def _width_scale(self, shape: tuple[int, ...]) -> float:
    """min(1, reference_fan_in / fan_in); 1 when None (and for vectors and
    scalars, whose fan-in 1 is below any reference)."""
    if self.reference_fan_in is None:
      return 1.0
    return min(1.0, self.reference_fan_in / _fan_in(shape))

  def _mlp(self, theta: lopt_base.MetaParams, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.hidden_layers + 1):
      x = x @ theta[f"w{i}"] + theta[f"b{i}"]
      if i < self.hidden_layers:
        x = jax.nn.relu(x)
    return x

  def opt_fn(self, theta: lopt_base.MetaParams,
             is_training: bool = False) -> opt_base.Optimizer:
    del is_training
    lopt = self

    class _Opt(opt_base.Optimizer):
      """The inner optimizer with these weights."""

      def init(self, params: Any, model_state: Any = None,
               num_steps: Any = None, key: Any = None) -> NominalMLPLOptState:
        del key
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        # Unknown length: treat the run as 10k steps long (the fraction-done
        # feature then grows slowly instead of saturating).
        steps = 10_000 if num_steps is None else num_steps
        return NominalMLPLOptState(
            params=params, state=model_state, mom_fast=zeros(),
            mom_slow=zeros(), rms=zeros(),
            rms_long=None if lopt._long_decay is None else zeros(),
            abs_mean=zeros() if lopt._abs_ratio else None,
            log_keep=(jax.tree_util.tree_map(lambda p: jnp.zeros((), jnp.float32),
                                             params)
                      if lopt._hypergradient else None),
            keep_grad=zeros() if lopt._hypergradient else None,
            cos_moments=(jax.tree_util.tree_map(
                lambda p: jnp.zeros((2,), jnp.float32), params)
                         if lopt._cos_snr else None),
            iteration=jnp.asarray(0, jnp.int32),
            num_steps=jnp.asarray(steps, jnp.float32))

      def update(self, opt_state: NominalMLPLOptState, grad: Any,
                 loss: Any = None, model_state: Any = None,
                 is_valid: bool = False, key: Any = None,
                 **kwargs: Any) -> NominalMLPLOptState:
        del loss, is_valid, key, kwargs
        t = opt_state.iteration + 1
        tf = t.astype(jnp.float32)

        def ema(b: float, acc: Any, f: Any = lambda g: g) -> Any:
          """Every moment: acc <- b * acc + (1 - b) * f(grad), per leaf."""
          return jax.tree_util.tree_map(lambda a, g: b * a + (1 - b) * f(g),
                                        acc, grad)

        mom_fast = ema(lopt.beta1, opt_state.mom_fast)
        mom_slow = ema(lopt.slow_beta, opt_state.mom_slow)
        gated = lopt.long_beta2 is not None
        faded = lopt.fade_tau is not None
        rms = ema(lopt.beta2, opt_state.rms, jnp.square)
        rms_long = (None if lopt._long_decay is None else
                    ema(lopt._long_decay, opt_state.rms_long, jnp.square))
        abs_mean = (ema(lopt.beta2, opt_state.abs_mean, jnp.abs)
                    if lopt._abs_ratio else None)
        frac = tf / jnp.maximum(opt_state.num_steps, 1.0)
        time_feats = [frac, jnp.tanh(frac)] + [
            jnp.tanh(tf / s - 1.0) for s in _TIMESCALES]
        # Bias corrections: one per moment, shared by every tensor.
        fix1, fix2, fix_slow, fix_long = (1 - b ** tf for b in (
            lopt.beta1, lopt.beta2, lopt.slow_beta, lopt._long_decay or 0.0))
        decay = 1.0
        if lopt.cosine_decay:
          # optax.cosine_decay_schedule's formula; optax needs decay_steps as
          # a Python number, and num_steps here is state (traced).
          a = lopt.cosine_decay_floor
          decay = a + (1 - a) * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(frac, 1.0)))

        def tensor_step(p, g, m1, m2, v, v_long, a2, log_keep, keep_grad,
                        cos_moments):
          v_hat = v / fix2
          denom = jnp.sqrt(v_hat) + lopt.eps
          adam = (m1 / fix1) / denom
          adam_slow = (m2 / fix_slow) / denom
          if rms_long is not None:  # Adam's direction at the long decay
            adam_long = (m1 / fix1) / (jnp.sqrt(v_long / fix_long) + lopt.eps)
          feats = jnp.stack([g] + ([p] if lopt.param_feature else []) + [
              m1, m2, adam, adam_slow, jax.lax.rsqrt(v_hat + 1e-12)], axis=-1)
          feats = _normalise(feats.reshape((-1, lopt._num_param_features)))
          glob = time_feats + [jnp.asarray(math.log(_fan_in(p.shape)) / 5.0,
                                           jnp.float32)]
          if lopt.snr_features:
            # log RMS in [log 1e-6, ~0]; /5 keeps it O(1) like the fan-in's.
            glob += [jnp.log(_rms(a) + 1e-6) / 5.0
                     for a in (adam, adam_slow)]
          if gated:  # < 0 once the gradients have been shrinking
            glob += [jnp.log((_rms(adam_long) + 1e-12) / (_rms(adam) + 1e-12))
                     / 5.0]
          glob = jnp.stack(glob)
          glob = jnp.broadcast_to(glob, feats.shape[:1] + glob.shape)
          out = lopt._mlp(theta, jnp.concatenate([feats, glob], axis=-1))
          if lopt.sign_symmetric:
            # Every per-parameter feature but the last (1/sqrt(v)) is odd.
            odd = feats.at[:, :-1].multiply(-1.0)
            flipped = lopt._mlp(theta, jnp.concatenate([odd, glob], axis=-1))
            # Step size and gate even, correction odd.
            out = jnp.stack([(out[:, 0] + flipped[:, 0]) / 2,
                             out[:, 1] - flipped[:, 1],
                             (out[:, -1] + flipped[:, -1]) / 2][:out.shape[1]],
                            -1)
          r = lopt.max_log_lr_change
          log_lr = (lopt.log_lr_scale * theta["log_lr"]
                    + r * jnp.tanh(out[:, 0] / r))
          direction = adam.reshape(-1)
          if lopt._hypergradient:
            # Hypergradient descent on log keep: -g . keep_grad is the last
            # step's loss change per unit keep (its cosine, for scale).
            cos = jnp.sum(g * keep_grad) / jnp.maximum(
                jnp.linalg.norm(g) * jnp.linalg.norm(keep_grad), 1e-30)
            rate = lopt.fade_tau
            if lopt._cos_snr:  # Noise-dominated cosines move keep little.
              cos_moments = (_SNR_BETA * cos_moments
                             + (1 - _SNR_BETA) * jnp.stack([cos, cos**2]))
              rate *= cos_moments[0]**2 / jnp.maximum(cos_moments[1], 1e-30)
            log_keep = jnp.clip(log_keep + rate * cos, -30.0, 0.0)
            keep = jnp.exp(log_keep)
          elif faded:  # Adam's direction at fade_beta2 where gradients flip.
            signal = (jnp.sum(jnp.abs(m1 / fix1))
                      / jnp.maximum(jnp.sum(a2 / fix2), 1e-30)
                      if lopt._abs_ratio else _rms(adam))
            keep = jnp.minimum(1.0, signal / lopt.fade_tau)
          if faded:
            direction = keep * direction + (1 - keep) * adam_long.reshape(-1)
          if gated:
            gate = jax.nn.sigmoid(lopt.gate_scale * out[:, 2])
            direction = (1 - gate) * direction + gate * adam_long.reshape(-1)
          step_size = jnp.exp(log_lr) * lopt._width_scale(p.shape) * decay
          if not lopt.direction_correction:
            step = step_size * direction
          else:
            correction = jnp.tanh(out[:, 1])
            if lopt.relative_correction:
              correction = correction * _rms(direction)
            elif gated:
              correction = correction * ((1 - gate) + gate * _rms(direction))
            elif faded:
              correction = correction * keep
            if lopt.tangential_correction:
              # The radial part of what the correction moves, not of tanh(d):
              # step sizes differ per parameter.
              step = step_size * direction + _remove_component(
                  step_size * correction, p.reshape(-1))
            else:
              step = step_size * (direction + correction)
          if lopt._hypergradient:  # d step / d keep, for the next step's rule
            d_keep = step_size * (adam - adam_long).reshape(-1)
            if lopt.direction_correction:
              unit = step_size * jnp.tanh(out[:, 1])
              d_keep += (_remove_component(unit, p.reshape(-1))
                         if lopt.tangential_correction else unit)
            keep_grad = d_keep.reshape(p.shape)
          return (p - step.reshape(p.shape).astype(p.dtype), log_keep,
                  keep_grad, cos_moments)

        hyper, snr = lopt._hypergradient, lopt._cos_snr
        unused = jax.tree_util.tree_map(lambda g: 0.0, grad)  # rule off
        out = jax.tree_util.tree_map(
            tensor_step, opt_state.params, grad, mom_fast, mom_slow, rms,
            rms if rms_long is None else rms_long,
            rms if abs_mean is None else abs_mean,
            opt_state.log_keep if hyper else unused,
            opt_state.keep_grad if hyper else grad,
            opt_state.cos_moments if snr else unused)
        params, log_keep, keep_grad, cos_moments = jax.tree_util.tree_transpose(
            jax.tree_util.tree_structure(grad),
            jax.tree_util.tree_structure((0, 0, 0, 0)), out)
        return NominalMLPLOptState(
            params=params, state=model_state, mom_fast=mom_fast,
            mom_slow=mom_slow, rms=rms, rms_long=rms_long, abs_mean=abs_mean,
            log_keep=log_keep if hyper else None,
            keep_grad=keep_grad if hyper else None,
            cos_moments=cos_moments if snr else None,
            iteration=t,
            num_steps=opt_state.num_steps)

    return _Opt()
