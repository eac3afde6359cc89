"""The public API: every name resolves, and importing the package stays light.

Import costs are checked in fresh interpreters: this pytest process has long
imported TensorFlow, lo and every module.
"""

import json
import pathlib
import subprocess
import sys

import pytest

import lopt_selftrain

# Prints which heavy or app modules the snippet's imports pulled in. An app is
# a module of lopt_selftrain.apps or any lopt_selftrain module with a `main`.
_PROBE = """
import json, sys
{snippet}
apps = sorted(n for n, m in list(sys.modules.items())
              if n.startswith("lopt_selftrain.apps.")
              or n.startswith("lopt_selftrain") and hasattr(m, "main"))
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


def test_loaders_import_no_app():
  # Loading with TensorFlow absent is tested in tests/test_io.py.
  loaded = _imports("import lopt_selftrain\n"
                    "lopt_selftrain.load_optax, lopt_selftrain.load_lo_optimizer")
  assert loaded["apps"] == []


def test_apps_live_in_apps_and_the_library_has_none():
  """Every absl entry point is in lopt_selftrain/apps/ (one CLI style: flags
  defined by `define_flags` when run); no library module defines flags."""
  package = pathlib.Path(lopt_selftrain.__file__).parent
  apps = sorted(p.stem for p in (package / "apps").glob("*.py")
                if p.stem != "__init__")
  assert apps == ["benchmark", "compare", "evaluate", "export", "gpu_run",
                  "select", "ship", "step_time", "train"]
  for name in apps:
    text = (package / "apps" / f"{name}.py").read_text()
    assert "def define_flags() -> None:" in text, name
    assert 'if __name__ == "__main__":\n  define_flags()\n  app.run(main)' in text
    assert "argparse" not in text, name
  for path in package.rglob("*.py"):
    if "apps" not in path.relative_to(package).parts:
      text = path.read_text()
      assert "app.run(" not in text and "flags.DEFINE" not in text, path
