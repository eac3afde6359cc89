"""lopt_selftrain: learned optimizers that train themselves (Metz et al., 2021).

Importing the package first restores the legacy JAX/NumPy names that
learned_optimization 0.0.1 needs (see `compat`), so lo can be imported after it.
"""

from lopt_selftrain import compat

compat.restore_legacy_names()
