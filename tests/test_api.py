"""The public API: every name resolves, and importing the package stays light.

Import costs are checked in fresh interpreters: this pytest process has long
imported TensorFlow, lo and every module.
"""

import json
import subprocess
import sys

import pytest

import lopt_selftrain

# Prints which heavy or app modules the snippet's imports pulled in. An app is
# a lopt_selftrain module with a `main` (an absl entry point).
_PROBE = """
import json, sys
{snippet}
apps = sorted(n for n, m in list(sys.modules.items())
              if n.startswith("lopt_selftrain") and hasattr(m, "main"))
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules,
                  "lo": "learned_optimization" in sys.modules,
                  "apps": apps}}))
"""


def _imports(snippet: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _PROBE.format(snippet=snippet)],
                       capture_output=True, text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_public_name_resolves():
  assert {"PopulationTrainer", "PopulationState", "SelfUpdate", "PBTConfig",
          "EvalConfig", "EstimatorConfig", "TaskMixture", "pbt_round",
          "load_optax", "load_lo_optimizer", "final_value"
          } <= set(lopt_selftrain.__all__)
  for name in lopt_selftrain.__all__:
    value = getattr(lopt_selftrain, name)
    assert value is not None, name
    assert name in dir(lopt_selftrain)
  assert lopt_selftrain.final_value([3.0] * 9 + [1.0]) == 1.0
  assert "train" not in lopt_selftrain.__all__  # an app, not the API
  with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
    lopt_selftrain.no_such_name  # noqa: B018


def test_import_loads_neither_tensorflow_nor_lo_nor_apps():
  loaded = _imports("import lopt_selftrain\n"
                    "assert lopt_selftrain.__all__ and dir(lopt_selftrain)")
  assert loaded == {"tensorflow": False, "lo": False, "apps": []}


def test_library_names_import_no_app():
  loaded = _imports(
      "import lopt_selftrain\n"
      "for name in lopt_selftrain.__all__:\n"
      "  if not name.startswith('load_'):\n"
      "    getattr(lopt_selftrain, name)")
  assert loaded["lo"]  # the names really were imported
  assert loaded["apps"] == []


def test_loaders_import_no_other_app():
  # lopt_selftrain.export holds the loaders next to the export app. Loading
  # with TensorFlow absent (lo imports it at module level, so: with
  # launch/no_tensorflow.py's stand-ins) is tested in tests/test_io.py.
  loaded = _imports("import lopt_selftrain\n"
                    "lopt_selftrain.load_optax, lopt_selftrain.load_lo_optimizer")
  assert set(loaded["apps"]) <= {"lopt_selftrain.export"}
