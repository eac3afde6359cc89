"""What the comparison writes for people: its figures and markdown tables.

Pure functions of the results `compare` computes, so a figure or table can be
redrawn from a saved results.json / metrics.jsonl without training again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

from lopt_selftrain import benchmark

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_meta_loss(records: dict[str, Sequence[dict[str, Any]]],
                   tuned: str | None, path: str,
                   reference: tuple[str, float] | None = None) -> None:
  """Left: every arm's population (median, 25-75% band; log scale). Right: the
  best member of each arm, zoomed in. `reference`: (label, meta-loss) drawn as
  a dashed line on both."""
  fig, (ax_all, ax_best) = plt.subplots(1, 2, figsize=(13, 5))
  for name, recs in records.items():
    steps = [r["step"] for r in recs]
    members = np.array([[np.nan if v is None else v
                         for v in r["member_meta_loss"]] for r in recs])
    style = "-" if name.startswith("selftrain") or name == tuned else ":"
    line, = ax_all.plot(steps, np.nanmedian(members, 1), style, label=name)
    ax_all.fill_between(steps, np.nanpercentile(members, 25, 1),
                        np.nanpercentile(members, 75, 1), alpha=0.12,
                        color=line.get_color())
    ax_best.plot(steps, np.nanmin(members, 1), style, color=line.get_color(),
                 label=name + (" (tuned)" if name == tuned else ""))
  ax_all.set_yscale("log")
  ax_all.set_title("population: median, shaded 25-75%")
  ax_best.set_title("best member")
  for ax in (ax_all, ax_best):
    if reference is not None:
      ax.axhline(reference[1], color="gray", linestyle="--", linewidth=1,
                 label=reference[0])
    ax.set_xlabel("meta step")
    ax.set_ylabel("meta-loss (mean inner loss / initial loss)")
    ax.legend(fontsize=8)
  _save(fig, path)


def plot_inner_curves(curves: dict[str, dict[str, list]], path: str) -> None:
  """One panel per family: every optimizer's mean training curve on the
  held-out tasks (hand-designed Adam dashed; log scale)."""
  fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5),
                           squeeze=False)
  colors = plt.get_cmap("tab20").colors
  for ax, (family, by_opt) in zip(axes[0], curves.items()):
    for color, (opt_name, curve) in zip(colors, by_opt.items()):
      ax.plot(curve, label=opt_name, color=color,
              linestyle="--" if opt_name.startswith("adam_inner") else "-")
    ax.set_yscale("log")
    ax.set_title(f"held-out {family} tasks")
    ax.set_xlabel("inner step")
    ax.set_ylabel("training loss (mean over tasks)")
    ax.legend(fontsize=7)
  _save(fig, path)


def _save(fig: Any, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _fmt(value: Any, none: str = "–") -> str:
  """A table cell: 4 significant digits; `none` for a missing value (a step
  never reached, a non-finite final value)."""
  if value is None:
    return none
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def results_markdown(results: dict[str, Any]) -> str:
  """The tables of results.md."""
  families = list(results["heldout_adam_inner_final_loss"])
  lines = [
      f"Run {results['date']} on {results['machine']}; base config "
      f"`{results['base_config']}`, {results['meta_steps']} meta steps per "
      f"arm; tuned Adam outer arm: `{results['tuned_adam_outer_arm']}`.", "",
      "Final = mean of the last 10% of the rounds (of the inner steps for "
      "held-out losses); last = the last round.", "",
      "| arm | final best meta-loss | final median | last best | lowest best | "
      "steps to tuned-Adam-outer final | improvement / 100 steps | "
      "acceleration | wall time s | "
      + " | ".join(f"held-out {f}" for f in families) + " |",
      "|---" * (9 + len(families)) + "|"]
  for name, arm in results["arms"].items():
    rates = ", ".join("–" if r is None else f"{r:.3f}"
                      for r in arm["improvement_per_100_steps"])
    lines.append(
        f"| {name} | {_fmt(arm['final_best_meta_loss'])} | "
        f"{_fmt(arm['final_median_meta_loss'])} | "
        f"{_fmt(arm['last_best_meta_loss'])} | "
        f"{_fmt(arm['lowest_best_meta_loss'])} | "
        f"{_fmt(arm['steps_to_tuned_adam_outer_final'], 'not reached')} | "
        f"{rates} | {_fmt(arm['acceleration'])} | {arm['wall_time_s']} | "
        + " | ".join(_fmt(arm["heldout_final_loss"][f]) for f in families)
        + " |")
  lines += ["", "Hand-designed Adam's meta-loss on the evaluation tasks: "
            + ", ".join(f"lr {lr}: {_fmt(v)}" for lr, v in
                        results["adam_inner_eval_meta_loss"].items()) + "."]
  lines += ["", "Hand-designed Adam on the same held-out tasks (final loss):",
            "", "| lr | " + " | ".join(families) + " |",
            "|---" * (1 + len(families)) + "|"]
  adam = results["heldout_adam_inner_final_loss"]
  for opt_name in adam[families[0]]:
    lines.append(f"| {opt_name.replace('adam_inner_lr', '')} | "
                 + " | ".join(_fmt(adam[f][opt_name]) for f in families) + " |")
  if "throughput" in results:
    lines += ["", "Throughput:", "", benchmark.markdown(results["throughput"])]
  return "\n".join(lines) + "\n"


def seeds_markdown(summary: dict[str, Any]) -> str:
  """The table of seeds.md."""
  keys = list(summary["mean"])
  lines = [f"`{summary['arm']}` vs. the tuned Adam-outer arm of the same seed; "
           f"reached the tuned Adam-outer final in {summary['reached']} of "
           f"{len(summary['seeds'])} seeds.", "",
           "| seed | " + " | ".join(keys) + " | steps to tuned Adam-outer final |",
           "|---" * (len(keys) + 2) + "|"]
  for seed, row in summary["seeds"].items():
    lines.append(f"| {seed} | " + " | ".join(_fmt(row[k]) for k in keys)
                 + f" | {_fmt(row['steps_to_tuned_adam_outer_final'], 'not reached')} |")
  lines.append("| mean | " + " | ".join(_fmt(summary["mean"][k]) for k in keys)
               + " | |")
  return "\n".join(lines) + "\n"
