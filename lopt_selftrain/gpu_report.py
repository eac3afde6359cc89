"""summary.json / summary.md of a `gpu_run` output directory, and the issue's
targets computed from them.

Pure functions of the files (settings.json, status.json, phases/*.json,
compare/arms/*/metrics.jsonl, compare/results.json), so the summary can be
rewritten at any moment by any phase and is complete whenever the run stops.

Targets:
  population_64_vs_8   s/step(P=64) / s/step(P=8) of the population, <= 2;
  population_vs_fused  s/step(population P) / s/step(ONE fused lo learner with
                       P x num_tasks problems), <= 1, at every P with both;
  roofline             population step at the first P: >= 25% of the fp32
                       peak FLOP/s, or >= 50% of peak HBM bytes/s where its
                       arithmetic intensity is under the ridge point;
  long_run             self-training + PBT reaches the final best meta-loss
                       of the tuned (best final) Adam-outer arm within the
                       same number of meta steps.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from lopt_selftrain import budget

SUMMARY = "summary.json"
MARKDOWN = "summary.md"


def _records(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def arm_summaries(arms_dir: str, names: Sequence[str]) -> dict[str, Any]:
  """Per arm, as compare reports it: meta steps logged, final best
  meta-loss (`compare.final`: mean of the last 10% of PBT rounds), last and
  lowest best meta-loss, the training loop's wall time; for the other arms,
  the first step at which they reached the tuned (lowest final) Adam-outer
  arm's final best meta-loss."""
  from lopt_selftrain import compare  # noqa: PLC0415
  out = {}
  records = {n: _records(os.path.join(arms_dir, n, "metrics.jsonl"))
             for n in names}
  for name, recs in records.items():
    out[name] = {"steps": recs[-1]["step"] if recs else 0} | ({
        "final_best_meta_loss": compare.final(recs),
        "last_best_meta_loss": recs[-1]["best_meta_loss"],
        "lowest_best_meta_loss": compare.lowest(recs),
        "wall_time_s": recs[-1]["wall_time_s"]} if recs else {})
  adam = [n for n in names if n.startswith("adam_outer")
          and out[n].get("final_best_meta_loss") is not None]
  if adam:
    tuned = min(adam, key=lambda n: out[n]["final_best_meta_loss"])
    target = out[tuned]["final_best_meta_loss"]
    for name in names:
      if not name.startswith("adam_outer") and records[name]:
        out[name].update(tuned_adam_outer_arm=tuned,
                         steps_to_tuned_adam_outer_final=compare.steps_to_reach(
                             records[name], target))
  return out


def _rows(throughput: dict[str, Any], side: str) -> dict[int, dict[str, Any]]:
  return {r["population_size"]: r for r in throughput.get("rows", [])
          if r["side"] == side and r.get("status") == "ok"}


def targets(throughput: dict[str, Any] | None, compare: dict[str, Any] | None
            ) -> dict[str, Any]:
  """The issue's four targets: value, threshold, met (None: not measured)."""
  pop = _rows(throughput or {}, "population")
  fused = _rows(throughput or {}, "fused_lo")
  out: dict[str, Any] = {}
  ratio = (pop[64]["seconds_per_step"] / pop[8]["seconds_per_step"]
           if 8 in pop and 64 in pop else None)
  out["population_64_vs_8"] = {"value": ratio, "target": "<= 2",
                               "met": None if ratio is None else ratio <= 2}
  ratios = {p: pop[p]["seconds_per_step"] / fused[p]["seconds_per_step"]
            for p in sorted(pop) if p in fused}
  out["population_vs_fused"] = {
      "value": ratios, "target": "<= 1 at every P",
      "met": all(r <= 1 for r in ratios.values()) if ratios else None}
  first = pop[min(pop)] if pop else None
  out["roofline"] = ({"population_size": min(pop), **first["roofline"],
                      "target": ">= 25% fp32 peak FLOP/s (compute-bound) or "
                                ">= 50% peak HBM bytes/s (memory-bound)"}
                     if first else {"met": None})
  self_arm = (compare or {}).get("arms", {}).get("selftrain_pbt", {})
  reach = self_arm.get("steps_to_tuned_adam_outer_final", "n/a")
  out["long_run"] = {
      "meta_steps": self_arm.get("steps"),
      "tuned_adam_outer_arm": self_arm.get("tuned_adam_outer_arm"),
      "steps_to_tuned_adam_outer_final": None if reach == "n/a" else reach,
      "target": "reaches the tuned Adam-outer final best meta-loss",
      "met": None if reach == "n/a" else reach is not None}
  return out


def summary(out_dir: str) -> dict[str, Any]:
  """Everything the run has produced so far, as one JSON-able dict."""
  read = lambda *p: budget.read_json(os.path.join(out_dir, *p))  # noqa: E731
  throughput, compare = read("phases", "throughput.json"), read(
      "phases", "compare.json")
  results = read("compare", "results.json")
  return {
      "schema": 1,
      "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
      "settings": read("settings.json"),
      "status": read(budget.STATUS),
      "machine": (throughput or {}).get("machine", "unknown (throughput phase "
                                        "did not start)"),
      "jax": (throughput or {}).get("jax"),
      "throughput": throughput,
      "compare": compare,
      "compare_results": None if results is None else {
          k: results.get(k) for k in ("meta_steps", "tuned_adam_outer_arm",
                                      "arms", "adam_inner_eval_meta_loss")},
      "heldout": read("phases", "heldout.json"),
      "targets": targets(throughput, compare),
  }


def _fmt(value: Any, spec: str = ".4g") -> str:
  return "-" if value is None else format(value, spec)


def markdown(s: dict[str, Any]) -> str:
  """summary.md: status, throughput table, comparison, held-out, targets."""
  lines = [f"# gpu_run summary ({s['written']})", "",
           f"Machine: {s['machine']}; jax {s['jax']}.", "", "| phase | status "
           "| seconds | deadline s |", "|---|---|---|---|"]
  for name, p in ((s["status"] or {}).get("phases") or {}).items():
    lines.append(f"| {name} | {p.get('status')} | {p.get('seconds', '-')} | "
                 f"{p.get('deadline_s', '-')} |")
  t = s["throughput"] or {}
  lines += ["", f"## Throughput ({t.get('family', '-')}, "
            f"{t.get('num_tasks', '-')} tasks per member)", "",
            "| P | side | status | s/step | first call s | TFLOP/s | GB/s | "
            "bound | peak memory GB |", "|---|---|---|---|---|---|---|---|---|"]
  for r in t.get("rows", []):
    roof, mem = r.get("roofline") or {}, r.get("memory") or {}
    peak = mem.get("peak_bytes_in_use")
    lines.append(
        f"| {r['population_size']} | {r['side']} | {r['status']} | "
        f"{_fmt(r.get('seconds_per_step'))} | {_fmt(r.get('first_call_s'), '.1f')} | "
        f"{_fmt(roof.get('flops_per_s') and roof['flops_per_s'] / 1e12, '.3g')} | "
        f"{_fmt(roof.get('bytes_per_s') and roof['bytes_per_s'] / 1e9, '.3g')} | "
        f"{roof.get('bound', '-')} | {_fmt(peak and peak / 1e9, '.3g')} |")
  lines += ["", f"Peaks: {t.get('peaks') or 'unknown'}; measured ceilings: "
            f"{t.get('ceilings', '-')}."]
  c = s["compare"] or {}
  lines += ["", f"## Comparison (rounds of {c.get('chunk_steps', '-')} steps, "
            f"report: {c.get('report', 'not written')})", "",
            "| arm | steps | final best | last best | lowest best | steps to "
            "tuned Adam-outer final |", "|---|---|---|---|---|---|"]
  for name, a in (c.get("arms") or {}).items():
    lines.append(f"| {name} | {a['steps']} | {_fmt(a.get('final_best_meta_loss'))}"
                 f" | {_fmt(a.get('last_best_meta_loss'))} | "
                 f"{_fmt(a.get('lowest_best_meta_loss'))} | "
                 f"{a.get('steps_to_tuned_adam_outer_final', '-')} |")
  h = s["heldout"] or {}
  lines += ["", f"## Held-out: {h.get('status', 'not run')}", ""]
  if "provenance" in h:
    lines.append(f"Exported {h['optimizer']} (member {h['provenance']['member']}"
                 f" at step {h['provenance']['step']}).")
  lines += ["", "## Targets", "", "| target | value | threshold | met |",
            "|---|---|---|---|"]
  for name, tgt in s["targets"].items():
    value = {k: v for k, v in tgt.items() if k not in ("target", "met")}
    lines.append(f"| {name} | {json.dumps(value)} | {tgt.get('target', '-')} | "
                 f"{tgt['met']} |")
  return "\n".join(lines) + "\n"


def write_summary(out_dir: str) -> dict[str, Any]:
  """Rewrites summary.json and summary.md (atomically) from the files."""
  s = summary(out_dir)
  budget.write_json(os.path.join(out_dir, SUMMARY), s)
  path = os.path.join(out_dir, MARKDOWN)
  temp = f"{path}.tmp{os.getpid()}"
  with open(temp, "w") as f:
    f.write(markdown(s))
  os.replace(temp, path)
  return s
