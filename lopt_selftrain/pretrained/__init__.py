"""Self-trained learned optimizers shipped with the package, by name.

`PRETRAINED` lists the shipped names, best first; each is a file
`<name>.lopt` (lopt_selftrain.export format) in this folder, with its
provenance in README.md here and inside the file. `resolve(name_or_path)`
turns a shipped name into its path and leaves anything else (a file path)
unchanged, so every loader accepts both.
"""

from __future__ import annotations

import os

PRETRAINED: tuple[str, ...] = ("selftrained_nominal_conv_hypergradient",
                               "selftrained_nominal_conv_fade",
                               "selftrained_nominal_conv",
                               "selftrained_nominal_deep",
                               "selftrained_nominal_cosine",
                               "selftrained_nominal_cosine_floor",
                               "selftrained_nominal_fast_rms",
                               "selftrained_nominal_mup16",
                               "selftrained_nominal_symmetric",
                               "selftrained_nominal_generated",
                               "selftrained_nominal_tabular",
                               "selftrained_nominal_broad",
                               "selftrained_broad_mlp", "selftrained_demo_mlp")

_DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """Path of the shipped optimizer `name`; ValueError listing the names otherwise."""
  if name not in PRETRAINED:
    raise ValueError(f"unknown pretrained optimizer {name!r}; shipped: "
                     f"{', '.join(PRETRAINED) or 'none'}")
  return os.path.join(_DIR, f"{name}.lopt")


def resolve(name_or_path: str) -> str:
  """A shipped name's file path; any other string is returned as given."""
  return path(name_or_path) if name_or_path in PRETRAINED else name_or_path
