"""A run's populations: read from its checkpoints, written as member files.

`load_populations` rebuilds a training run's trainer from its saved gin
config and reads every member's weights at chosen checkpoint steps;
`export_member`/`export_run` write one member as an exported file
(`lopt_selftrain.export`'s format, with its provenance and PBT lineage), and
`export_population` all of them: kilobytes where a checkpoint holds the
whole unroll state, so that is what to bring back from a machine that
trained, to choose among the members elsewhere (`apps.select` reads such a
directory like a run dir, through `load_populations`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import gin
import jax
import numpy as np
from learned_optimization.learned_optimizers import base as lopt_base

from lopt_selftrain import checkpoint, config, files, rounds
from lopt_selftrain.export import (
  ExportError,
  LearnedOptSpec,
  read,
  spec_from_operative_config,
  write,
)
from lopt_selftrain.population import PopulationTrainer
from lopt_selftrain.run_dir import saved_config


def member_lineage(events: Sequence[dict[str, Any]],
                   member: int) -> list[dict[str, Any]]:
  """The PBT events (the run's lineage, `training.train`) that made `member` what it is, oldest first.

  Walks back from the end: an exploit/nonfinite event replacing the member
  continues with the member it was copied from, before that step; a
  population restore continues from the restored step.
  """
  chain, before = [], math.inf
  for event in reversed(events):
    if event["step"] >= before:
      continue
    if event["reason"] == "restore":
      chain.append(event)
      before = event["copied_from"] + 1
    elif event["member"] == member:
      chain.append(event)
      member, before = event["copied_from"], event["step"]
  return chain[::-1]


class Population(NamedTuple):
  """Every member of one checkpoint of a run, ready to export or evaluate."""
  run_dir: str
  learned_opt: lopt_base.LearnedOptimizer
  spec: LearnedOptSpec
  thetas: Any  # leading member axis
  step: int
  meta_loss: np.ndarray  # [members]
  lineage_events: list[dict[str, Any]]
  outer_optimizer: str
  # Read back from member files (`read_population`): each member's own.
  provenances: list[dict[str, Any]] | None = None

  def best_member(self) -> int:
    """Index of the lowest finite meta-loss; ExportError if none is finite."""
    if not np.isfinite(self.meta_loss).any():
      raise ExportError(f"no member of step {self.step} of {self.run_dir} has a "
                        "finite meta-loss; pick one with --member")
    return int(np.nanargmin(np.where(np.isfinite(self.meta_loss),
                                     self.meta_loss, np.inf)))


MEMBER_FILE = "member_{:03d}.lopt"  # `export_population`'s file names


def _member_files(directory: str) -> list[str]:
  """The member files of a directory `export_population` wrote ([] if none)."""
  if not files.isdir(directory):
    return []
  return sorted(f"{directory}/{name}" for name in files.listdir(directory)
                if re.fullmatch(r"member_\d{3}\.lopt", name))


def load_populations(run_dir: str, steps: Sequence[int] | None = None
                     ) -> list[Population]:
  """Populations of a training run at checkpoint `steps` (None: the latest
  intact one), or the one population of a directory of member files
  (`export_population`), which needs no checkpoint.

  Rebuilds the run's trainer once from its operative_config.gin (or the config
  it was resumed under, see `run_dir`), which replaces the global gin config
  of this process.
  """
  run_dir = run_dir.rstrip("/")
  if not files.isdir(run_dir):
    raise ExportError(f"run dir {run_dir} does not exist")
  if _member_files(run_dir):
    if steps:
      raise ExportError(f"{run_dir} holds exported members of one step; "
                        "it has no checkpoints to pick steps from")
    return [read_population(run_dir)]
  gin_path = f"{run_dir}/{config.OPERATIVE_CONFIG}"
  if not files.exists(gin_path):
    raise ExportError(f"{run_dir} has no {config.OPERATIVE_CONFIG}; is it a "
                      "--train_log_dir of lopt_selftrain.apps.train?")
  ckpt_dir = f"{run_dir}/checkpoints"
  saved = checkpoint.list_steps(ckpt_dir)
  if not saved:  # Fail before the costly rebuild.
    raise ExportError(f"{ckpt_dir} holds no checkpoint")
  missing = sorted(set(steps or ()) - set(saved))
  if missing:
    raise ExportError(f"{ckpt_dir} has no checkpoint of step(s) {missing}; "
                      f"it has {saved}")
  # A run resumed under a changed config saved that config in another file.
  gin.clear_config()
  config.parse([], [saved_config(run_dir, max(steps or saved))[1]])
  trainer = PopulationTrainer()
  target = rounds.checkpoint_target(trainer.init())
  if steps:
    try:
      found = [(s, *checkpoint.restore(ckpt_dir, s, target)) for s in steps]
    except files.CorruptFileError as e:
      raise ExportError(str(e)) from e
  else:
    latest = checkpoint.restore_latest(ckpt_dir, target)
    if latest is None:
      raise ExportError(f"{ckpt_dir} holds no intact checkpoint")
    found = [latest]
  with files.open(gin_path) as f:
    spec = spec_from_operative_config(trainer.learned_opt, f.read())
  return [Population(
      run_dir=run_dir, learned_opt=trainer.learned_opt, spec=spec,
      thetas=jax.tree_util.tree_map(np.asarray,
                                    trainer.thetas(tree["population"])),
      step=step, meta_loss=np.asarray(tree["population"].meta_loss, np.float64),
      lineage_events=list(meta["lineage"]),
      outer_optimizer=trainer.outer_optimizer_name)
          for step, tree, meta in found]


def load_population(run_dir: str) -> Population:
  """The latest intact checkpoint of a run, or a directory of member files
  (see `load_populations`)."""
  return load_populations(run_dir)[0]


def export_member(population: Population, member: int, out: str,
                  **extra: Any) -> dict[str, Any]:
  """Writes one member to `out`; returns its provenance (with `extra` added)."""
  size = len(population.meta_loss)
  if not 0 <= member < size:
    raise ExportError(f"--member={member} is out of range: the population has "
                      f"{size} members (0..{size - 1})")
  theta = jax.tree_util.tree_map(lambda x: x[member], population.thetas)
  if population.provenances is not None:  # Where it came from is kept.
    provenance = {**population.provenances[member], **extra}
  else:
    provenance = {
        "run_dir": population.run_dir,
        "step": population.step,
        "member": member,
        "population_size": size,
        "meta_loss": float(population.meta_loss[member]),
        "population_meta_loss": [float(x) for x in population.meta_loss],
        "lineage": member_lineage(population.lineage_events, member),
        "outer_optimizer": population.outer_optimizer,
        **extra,
    }
  write(out, population.spec, theta, provenance)
  return provenance


def export_population(population: Population, out_dir: str) -> list[str]:
  """Writes every member to `out_dir`/member_<m>.lopt; returns the paths.

  Kilobytes where a checkpoint holds the whole unroll state (71 MB for
  `selftrain_nominal_conv_cpu.gin`): what to bring back from a machine that
  trained, to choose among the members elsewhere (`apps.select` reads the
  directory like a run dir).
  """
  paths = [f"{out_dir.rstrip('/')}/{MEMBER_FILE.format(m)}"
           for m in range(len(population.meta_loss))]
  for m, path in enumerate(paths):
    export_member(population, m, path)
  return paths


def read_population(directory: str) -> Population:
  """The population `export_population` wrote to `directory`."""
  members = [read(path) for path in _member_files(directory)]
  if not members:
    raise ExportError(f"{directory} holds no member_<m>.lopt files")
  first = members[0]
  if any(m.spec != first.spec for m in members):
    raise ExportError(f"{directory}: the member files hold different learned "
                      "optimizers")
  provenances = [m.provenance for m in members]
  return Population(
      run_dir=directory.rstrip("/"), learned_opt=first.learned_opt,
      spec=first.spec,
      thetas=jax.tree_util.tree_map(lambda *x: np.stack(x),
                                    *[m.theta for m in members]),
      step=int(first.provenance.get("step", -1)),
      meta_loss=np.array([p.get("meta_loss", np.nan) for p in provenances],
                         np.float64),
      lineage_events=[], outer_optimizer=str(first.provenance.get(
          "outer_optimizer", "unknown")), provenances=provenances)


def export_run(run_dir: str, out: str, member: int | None = None
               ) -> dict[str, Any]:
  """Exports one member (default: lowest meta-loss) of a run's latest
  checkpoint (see `load_population`); returns the provenance stored."""
  population = load_population(run_dir)
  if member is None:
    member = population.best_member()
  return export_member(population, member, out)
