"""Runs a lopt_selftrain app on a machine where TensorFlow cannot be installed.

  python launch/no_tensorflow.py lopt_selftrain.apps.benchmark --gin_config=...

Where TensorFlow is installed this changes nothing. Where it is not, stand-ins
for TensorFlow, TFDS and `flax.metrics.tensorboard` serve the whole process
(`lopt_selftrain.no_tensorflow`): local gfile, no-op TensorBoard summaries, and
anything else raises when called, naming itself.
"""

import runpy
import sys

from lopt_selftrain import no_tensorflow as stand_ins


def main() -> None:
  if len(sys.argv) < 2:
    sys.exit("usage: python launch/no_tensorflow.py MODULE [ARGS...]")
  stand_ins.install()
  module = sys.argv[1]
  sys.argv = [module] + sys.argv[2:]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
