"""examples/simple_selftrain.py runs as a user runs it and self-trains."""

import math
import pathlib
import re
import subprocess
import sys

import apprun

EXAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "examples"
           / "simple_selftrain.py")
ROUND = re.compile(r"meta step +(\d+)  meta-loss best (\S+)  median (\S+)  "
                   r"PBT copies (\d+)")


def test_simple_selftrain_example_prints_finite_meta_losses(tmp_path_factory):
  # 4 meta steps: PBT rounds (interval 2) at steps 0, 2 and 4.
  run = subprocess.run([sys.executable, str(EXAMPLE), "4"],
                       capture_output=True, text=True, timeout=600,
                       env=apprun.app_env(tmp_path_factory),
                       cwd=tmp_path_factory.mktemp("example"))
  assert run.returncode == 0, run.stderr[-2000:]
  rounds = [m.groups() for m in ROUND.finditer(run.stdout)]
  assert [int(r[0]) for r in rounds] == [0, 2, 4]
  for _, best, median, _ in rounds:
    assert math.isfinite(float(best)) and math.isfinite(float(median))
    assert 0 < float(best) <= float(median) < 2  # normalised: 1 = no progress
  # 8 members: the bottom 25% are replaced at every round after step 0.
  assert [copies for *_, copies in rounds] == ["0", "2", "2"]
  final = re.search(r"final best meta-loss .*: (\S+)", run.stdout)
  assert final and float(final[1]) == float(rounds[-1][1])
