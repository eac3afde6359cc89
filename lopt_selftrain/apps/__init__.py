"""The command-line apps: short absl programs over the library (flax's "apps
short, logic in the library"). Run one with `python -m lopt_selftrain.apps.NAME`.

  train      meta-train a population (self-training + PBT)     `training.train`
  export     one member of a run as a portable optimizer file  `members.export_run`
  evaluate   an exported optimizer against tuned Adam          `heldout`
  compare    self-training vs Adam outer-training, one machine `compare.compare`
  benchmark  population step vs sequential lo learners         `benchmark`
  step_time  compile and step time of each task family         `tasks.step_time`
  gpu_run    everything a lent GPU measures, in one budget     `gpu_run`
  ship       add an exported optimizer to the shipped ones     `pretrained.ship`

Every app defines its flags only when run (`define_flags` under `__main__`), so
tests can import several of them; bad input exits 2 with one `error:` line
(`config.user_errors_exit`), bugs keep their traceback.
"""
