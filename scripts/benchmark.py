"""Benchmarks: `python scripts/benchmark.py --suite SUITE [options]`.

Each suite lives in `scripts/bench_<suite>.py` and defines `add_args(parser)` and `run(args) -> list[dict]`
(one dict per measured configuration). This file only dispatches, prints a Markdown table, and appends
the rows, with date, machine and versions, to `--out` (JSON lines) when given.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # the suites
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # telugu_jax, from a checkout
SUITES = ("train", "decode", "convert", "data", "loader", "serve", "sft", "tasks")


def environment() -> dict:
  import jax

  env = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
         "machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
         "jax": jax.__version__, "backend": jax.default_backend(),
         "device": str(jax.devices()[0].device_kind)}
  try:
    import torch

    env["torch"] = torch.__version__
  except ImportError:
    pass
  return env


def markdown_table(rows: list[dict]) -> str:
  if not rows:
    return "(no rows)"
  cols = list(dict.fromkeys(k for r in rows for k in r))

  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return str(v)

  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--suite", required=True, choices=SUITES)
  parser.add_argument("--out", help="append results as JSON lines to this file")
  known, _ = parser.parse_known_args(argv)
  try:
    module = importlib.import_module(f"bench_{known.suite}")
  except ModuleNotFoundError as e:
    if e.name == f"bench_{known.suite}":
      parser.error(f"suite {known.suite!r} is not built yet")
    raise
  module.add_args(parser)
  args = parser.parse_args(argv)
  rows = module.run(args)
  env = environment()
  print(f"\n## {args.suite} — {env['date']}, {env['device']} ({env['backend']}), jax {env['jax']}\n")
  print(markdown_table(rows))
  if args.out:
    with open(args.out, "a") as f:
      for r in rows:
        f.write(json.dumps({"suite": args.suite, **env, **r}) + "\n")
  return rows


if __name__ == "__main__":
  main()
