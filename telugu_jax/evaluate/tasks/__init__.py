"""Public Telugu benchmarks, each read from its upstream file, and bits per byte on held-out text.

    python -m telugu_jax.evaluate --config configs/eval.py \\
        --config.tasks.mgsm.path=benchmarks/te/mgsm_te.tsv --config.tasks.mgsm.limit=50

| name        | module          | file(s)                                   | metrics (results.json)                  |
|-------------|-----------------|-------------------------------------------|-----------------------------------------|
| bpb         | bpb.py          | plain text, blank-line separated docs      | bits_per_byte, bits_per_char            |
| translation | translation.py  | SIB-200/FLORES TSV, `.en` and `.te`        | chrf_pp_en_te/te_en, bleu_en_te/te_en   |
| tydiqa      | tydiqa.py       | QuIST JSON or question/answer JSONL        | exact_match, f1, contains               |
| mgsm        | mgsm.py         | MGSM TSV `question<TAB>answer`             | accuracy                                |
| sib200      | sib200.py       | SIB-200 TSV                                | accuracy, chance                        |

Each module has a frozen `Settings` dataclass and `run(loaded, settings, *, batch_size) -> (metrics, rows)`;
`settings_from_config` is the one place the `config.tasks` section becomes those dataclasses. A task with
an empty path is off; one whose file is missing is skipped with one line (`check_inputs`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping

from telugu_jax.evaluate.tasks import bpb, mgsm, sib200, translation, tydiqa

TASKS = {"bpb": bpb, "translation": translation, "tydiqa": tydiqa, "mgsm": mgsm, "sib200": sib200}


def settings_from_config(section: Mapping | None) -> dict:
  """`config.tasks` (a ConfigDict or dict of name -> fields) -> {name: that task's Settings}."""
  out = {}
  for name, fields in (section or {}).items():
    if name not in TASKS:
      raise ValueError(f"config.tasks.{name}: unknown task; choose from {sorted(TASKS)}")
    cls = TASKS[name].Settings
    fields = dict(fields.to_dict() if hasattr(fields, "to_dict") else fields)
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(fields) - known):
      raise ValueError(f"config.tasks.{name}: unknown settings {unknown}; {name} takes {sorted(known)}")
    out[name] = cls(**fields)
  return out


def check_inputs(settings: Mapping) -> tuple[dict, dict]:
  """(tasks to run, {name: one-line reason} for those skipped: off, or a file missing)."""
  run, skipped = {}, {}
  for name, s in settings.items():
    paths = s.inputs()
    if not all(paths):
      skipped[name] = "off (no path given)"
    elif missing := [p for p in paths if not os.path.isfile(p)]:
      skipped[name] = f"{missing[0]} not found"
    else:
      run[name] = s
  return run, skipped


def run_tasks(loaded, settings: Mapping, *, batch_size: int = 16) -> tuple[dict, list[dict]]:
  """Every task on one model: ({name: metrics + seconds}, answer rows with `set` = "task/NAME")."""
  results, rows = {}, []
  for name, s in settings.items():
    t0 = time.time()
    metrics, task_rows = TASKS[name].run(loaded, s, batch_size=batch_size)
    metrics["seconds"] = round(time.time() - t0, 2)
    results[name] = metrics
    rows += [{"set": f"task/{name}", **r} for r in task_rows]
  return results, rows


HEADLINE = {"bpb": ("bits_per_byte", "bits/byte"), "translation": ("chrf_pp_en_te", "chrF++ en-te"),
            "tydiqa": ("f1", "F1"), "mgsm": ("accuracy", "acc %"), "sib200": ("accuracy", "acc %")}


def summary_line(results: Mapping) -> str:
  """One line per system: each task's headline metric and its time."""
  parts = []
  for name, r in results.items():
    key, label = HEADLINE[name]
    parts.append(f"{name} {label} {r[key]:.3f} (n {r['n']}, {r['seconds']:.1f}s)")
  return "tasks: " + "; ".join(parts)
