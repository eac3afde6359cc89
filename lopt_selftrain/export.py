r"""Export a self-trained learned optimizer as one portable file, and load it.

(Command line: `python -m lopt_selftrain.apps.export --run_dir=D --out=F`.)

A run directory needs its gin config, its code and a population-sized restore
to be read; the exported file needs none of that. It holds one member's weights
theta, the learned optimizer's class and constructor arguments, and where the
weights came from, so `load_optax(path)` gives a drop-in optax optimizer on any
machine with lo installed. Reading a run's checkpoints and writing its
members as such files: `lopt_selftrain.members`.

File format (a `files.Envelope`, written atomically; gs:// works)::

  b"LOPTEX01"      8 bytes, magic and format version
  payload          msgpack (flax.serialization) of the dict below
  sha256           32 bytes, digest of magic + payload

  {"learned_opt": {"class": "learned_optimization....mlp_lopt.MLPLOpt",
                   "gin": "MLPLOpt.exp_mult = 0.001\nMLPLOpt.step_mult = 0.1..."},
   "theta": flax state dict of the weights,
   "provenance": {"run_dir", "step", "member", "meta_loss", "lineage", ...}}

The "gin" entry binds every constructor argument of that class (defaults
included), so the optimizer is rebuilt identically whatever gin config the
loading program has; it can also be fed to `gin.parse_config` as is.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
from typing import Any, NamedTuple

import lopt_selftrain  # noqa: F401  (restores legacy names before lo imports)

# isort: split
import flax
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from gin import config_parser
from learned_optimization.learned_optimizers import base as lopt_base
from learned_optimization.optimizers import base as opt_base

from lopt_selftrain import (
  compat,
  files,
  pretrained,
  self_update,
)

_ENVELOPE = files.Envelope(b"LOPTEX01", "an exported learned optimizer")



class ExportError(ValueError):
  """An exported optimizer cannot be written or read; the message is one line."""


def _names_class(selector: str, class_path: str) -> bool:
  """True if a gin selector ("MLPLOpt", "mlp_lopt.MLPLOpt", ...) names the class."""
  return class_path == selector or class_path.endswith("." + selector)


def _class_bindings(text: str, class_path: str) -> dict[str, dict[str, Any]]:
  """{scope: {arg: value}} of the gin bindings in `text` for the class.

  Parsed with gin's own parser, without touching the global gin config.
  """
  found: dict[str, dict[str, Any]] = {}
  for statement in config_parser.ConfigParser(text, gin.config.ParserDelegate()):
    if (isinstance(statement, config_parser.BindingStatement)
        and _names_class(statement.selector, class_path)):
      found.setdefault(statement.scope, {})[statement.arg_name] = statement.value
  return found


@dataclasses.dataclass(frozen=True)
class LearnedOptSpec:
  """What rebuilds a learned optimizer: its class and every constructor argument.

  Attributes:
    class_path: importable "module.ClassName" of an lo `LearnedOptimizer`.
    kwargs: constructor arguments, Python literals only (they are stored as
      gin text).
  """
  class_path: str
  kwargs: dict[str, Any]

  def __post_init__(self):
    for name, value in self.kwargs.items():
      try:
        literal = ast.literal_eval(repr(value)) == value
      except (ValueError, SyntaxError):
        literal = False
      if not literal:
        raise ExportError(f"{self.class_name}.{name} = {value!r} is not a Python "
                          "literal; only literal constructor arguments export")

  @classmethod
  def of(cls, opt_cls: type, **kwargs: Any) -> LearnedOptSpec:
    """Spec of `opt_cls(**kwargs)`."""
    return cls(f"{opt_cls.__module__}.{opt_cls.__qualname__}", kwargs)

  @property
  def class_name(self) -> str:
    return self.class_path.rsplit(".", 1)[-1]

  def to_gin(self) -> str:
    """One `ClassName.arg = value` line per argument, sorted."""
    return "".join(f"{self.class_name}.{k} = {v!r}\n"
                   for k, v in sorted(self.kwargs.items()))

  @classmethod
  def from_gin(cls, class_path: str, text: str) -> LearnedOptSpec:
    """Inverse of `to_gin`: unscoped bindings of the class only."""
    scopes = _class_bindings(text, class_path)
    if set(scopes) - {""}:
      raise ExportError(f"gin text for {class_path} has scoped bindings "
                        f"{sorted(set(scopes) - {''})}")
    return cls(class_path, scopes.get("", {}))

  def build(self) -> lopt_base.LearnedOptimizer:
    """Imports the class and constructs it with exactly `kwargs`, and the
    Python defaults for arguments `kwargs` lacks (ones added after the file
    was written): never with what the process's gin config binds."""
    module_name, _, name = self.class_path.rpartition(".")
    try:
      opt_cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
      raise ExportError(f"cannot import learned optimizer class "
                        f"{self.class_path}: {e}") from e
    if not (isinstance(opt_cls, type)
            and issubclass(opt_cls, lopt_base.LearnedOptimizer)):
      raise ExportError(f"{self.class_path} is not an lo LearnedOptimizer")
    defaults = {name: p.default
                for name, p in inspect.signature(opt_cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return opt_cls(**{**defaults, **self.kwargs})


def spec_from_operative_config(learned_opt: lopt_base.LearnedOptimizer,
                               text: str) -> LearnedOptSpec:
  """Spec of a gin-built `learned_opt`, from the operative config that built it.

  gin's operative config lists every argument the constructor received from
  gin, defaults included, which is exactly what a faithful rebuild needs.
  """
  opt_cls = type(compat.unwrapped(learned_opt))
  spec = LearnedOptSpec.of(opt_cls)
  scopes = _class_bindings(text, spec.class_path)
  if len(scopes) > 1:
    raise ExportError(f"the operative config binds {spec.class_name} in several "
                      f"scopes {sorted(scopes)}; cannot tell which one was used")
  return LearnedOptSpec.of(opt_cls, **next(iter(scopes.values()), {}))


class Exported(NamedTuple):
  """Contents of an exported file, with the learned optimizer rebuilt."""
  learned_opt: lopt_base.LearnedOptimizer
  spec: LearnedOptSpec
  theta: Any
  provenance: dict[str, Any]


def _fit_theta(learned_opt: lopt_base.LearnedOptimizer, state_dict: Any,
               where: str) -> Any:
  """The weights in `learned_opt.init`'s tree, after checking shapes and dtypes."""
  target = jax.eval_shape(learned_opt.init, jax.random.PRNGKey(0))
  try:
    theta = flax.serialization.from_state_dict(target, state_dict)
    theta = jax.tree_util.tree_map(np.asarray, theta)
    signature = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), theta)
    wanted = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), target)
  except (ValueError, KeyError, TypeError) as e:
    raise ExportError(f"{where}: weights do not fit the learned optimizer: "
                      f"{e}") from e
  if signature != wanted:
    raise ExportError(f"{where}: weight shapes/dtypes {signature} do not fit the "
                      f"learned optimizer's {wanted}")
  return jax.tree_util.tree_map(jnp.asarray, theta)


def write(path: str, spec: LearnedOptSpec, theta: Any,
          provenance: dict[str, Any]) -> None:
  """Atomically writes an exported optimizer (temp file, then rename).

  Args:
    path: destination, local or gs://; its directory is created.
    spec: the learned optimizer to rebuild; must accept `theta`.
    theta: weights of ONE learned optimizer (no population axis).
    provenance: msgpack-able dict describing where `theta` came from.
  """
  state_dict = flax.serialization.to_state_dict(
      jax.tree_util.tree_map(np.asarray, theta))
  _fit_theta(spec.build(), state_dict, path)  # Refuse files that cannot load.
  payload = flax.serialization.msgpack_serialize({
      "learned_opt": {"class": spec.class_path, "gin": spec.to_gin()},
      "theta": state_dict,
      "provenance": provenance,
  })
  directory = os.path.dirname(path)
  if directory:
    files.makedirs(directory)
  _ENVELOPE.write(path, [payload])


def read(path: str) -> Exported:
  """Verifies and loads an exported optimizer; ExportError if it is not intact."""
  try:
    payload = _ENVELOPE.read(path)
  except FileNotFoundError as e:
    raise ExportError(f"{path} does not exist") from e
  except files.CorruptFileError as e:
    raise ExportError(str(e)) from e
  try:
    contents = flax.serialization.msgpack_restore(bytes(payload))
    class_path = contents["learned_opt"]["class"]
    gin_text = contents["learned_opt"]["gin"]
    state_dict, provenance = contents["theta"], contents["provenance"]
  except (KeyError, TypeError, ValueError) as e:  # msgpack errors are ValueErrors.
    raise ExportError(f"{path} has an unreadable payload: {e}") from e
  spec = LearnedOptSpec.from_gin(class_path, gin_text)
  learned_opt = compat.jit_safe(spec.build())
  return Exported(learned_opt, spec, _fit_theta(learned_opt, state_dict, path),
                  provenance)


def load_lo_optimizer(path: str) -> opt_base.Optimizer:
  """The exported learned optimizer as an lo Optimizer: `learned_opt.opt_fn(theta)`.

  `path` may also be a shipped name (`lopt_selftrain.pretrained.PRETRAINED`).
  """
  exported = read(pretrained.resolve(path))
  return exported.learned_opt.opt_fn(exported.theta)


def load_optax(path: str, num_steps: int | None = None
               ) -> optax.GradientTransformationExtraArgs:
  """The exported learned optimizer as an optax transformation.

  `update(grads, state, params, loss=loss)` returns `new_params - params`, so
  `optax.apply_updates(params, updates)` gives the lo optimizer's new params
  (up to one rounding of the subtraction). Pass `loss` (the training loss of
  `params`, a scalar) because learned optimizers may read it; MLPLOpt ignores
  it, RNNMLPLOpt needs it. `key` (a PRNG key) feeds stochastic learned
  optimizers. Works under `jax.jit` and inside `optax.chain`. The state keeps
  a copy of the params (lo optimizers track them); `params` passed to `update`
  always take precedence, so transformations applied outside stay visible.

  Args:
    path: exported file, or a shipped name (lopt_selftrain.pretrained.PRETRAINED).
    num_steps: planned number of training steps, for learned optimizers whose
      features depend on training progress.
  """
  opt = load_lo_optimizer(path)

  def init(params: optax.Params) -> Any:
    return opt.init(params, num_steps=num_steps)

  def update(grads: optax.Updates, state: Any, params: optax.Params | None = None,
             *, loss: jax.Array | None = None, key: jax.Array | None = None,
             **extra_args: Any) -> tuple[optax.Updates, Any]:
    del extra_args  # Meant for other transformations of an optax.chain.
    if params is not None:
      state = self_update.with_params(state, params)
    new_state = opt.update(state, grads, loss=loss, key=key)
    updates = jax.tree_util.tree_map(jnp.subtract, opt.get_params(new_state),
                                     opt.get_params(state))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init, update)
