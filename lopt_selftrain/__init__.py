"""lopt_selftrain: learned optimizers that train themselves (Metz et al., 2021).

Importing the package first restores the legacy JAX/NumPy names that
learned_optimization 0.0.1 needs (see `compat`), so lo can be imported after it,
and where TensorFlow is not installed imports lo's few modules that import it
with stand-ins (see `no_tensorflow`), so the learned optimizers load without it.

The public API below is resolved on first use (PEP 562), so `import
lopt_selftrain` stays light: it imports neither lo nor TensorFlow nor any app
(`lopt_selftrain.apps`) until a name that needs them is used.

  PopulationTrainer, PopulationState   the vmapped population (population.py)
  EstimatorConfig                      lo gradient estimator settings
  SelfUpdate                           lo Optimizer whose step a learned optimizer computes
  PBTConfig                            population based training settings (pbt.py)
  pbt_round                            one PBT round: evaluate, select, exploit/explore (rounds.py)
  EvalConfig                           evaluation settings (evaluation.py)
  TaskMixture                          weighted lo task families (tasks/)
  final_value                          THE final value of a curve (curves.py)
  load_optax, load_lo_optimizer        an exported optimizer as optax / lo optimizer
  PRETRAINED                           optimizers shipped with the package
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from lopt_selftrain import compat, no_tensorflow

compat.restore_legacy_names()
no_tensorflow.import_lo_without_tensorflow()  # no-op where TensorFlow is installed

# Public name -> module that defines it (imported on first access).
_LAZY = {
    "PopulationTrainer": "lopt_selftrain.population",
    "PopulationState": "lopt_selftrain.population",
    "EstimatorConfig": "lopt_selftrain.population",
    "SelfUpdate": "lopt_selftrain.self_update",
    "PBTConfig": "lopt_selftrain.pbt",
    "pbt_round": "lopt_selftrain.rounds",
    "EvalConfig": "lopt_selftrain.evaluation",
    "TaskMixture": "lopt_selftrain.tasks.mixture",
    "final_value": "lopt_selftrain.curves",
    "load_optax": "lopt_selftrain.export",
    "load_lo_optimizer": "lopt_selftrain.export",
    "PRETRAINED": "lopt_selftrain.pretrained",
}
# The shipped optimizers are public once their module is in the checkout
# (find_spec of a direct submodule imports nothing).
__all__ = sorted(name for name, module in _LAZY.items()
                 if name != "PRETRAINED" or importlib.util.find_spec(module))


def __getattr__(name: str) -> Any:
  if name not in __all__:
    raise AttributeError(f"module 'lopt_selftrain' has no attribute {name!r}")
  value = getattr(importlib.import_module(_LAZY[name]), name)
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
