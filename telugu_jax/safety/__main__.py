"""Command line for the safety filter: audit texts against the lists, or score the lists on a labelled set.

    python -m telugu_jax.safety check --in texts.jsonl --out decisions.jsonl [--extra-dir my_lists] [--all]
    python -m telugu_jax.safety eval [--set labelled.jsonl ...] [--json report.json] [--extra-dir my_lists]

`check` reads lines `{"id", "text", "role"?}` (role "user" by default) and writes, in input order,
`{"id", "blocked", "category", "rule"}`; identity questions get category "identity", blocked false.
With `--all`, every rule that fires is listed under "hits" (for finding rules that overlap).
`eval` with no `--set` scores each bundled set (labelled.jsonl, heldout*.jsonl) separately.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys

from telugu_jax.errors import UserError, run_cli
from telugu_jax.safety.filter import SafetyFilter
from telugu_jax.safety.metrics import evaluate, format_report, json_lines, read_labelled
from telugu_jax.safety.rules import ROLES, RuleError, builtin_dir


def _read_texts(path: str) -> list[dict]:
  items = []
  for where, d in json_lines(path, hint='; each line must be {"id": ..., "text": ...}'):
    if not isinstance(d, dict) or "id" not in d or not isinstance(d.get("text"), str):
      raise ValueError(f"{where}: each line needs an \"id\" and a string \"text\"")
    if d.setdefault("role", "user") not in ROLES:
      raise ValueError(f"{where}: \"role\" must be one of {ROLES}, got {d['role']!r}")
    items.append(d)
  return items


def check(args: argparse.Namespace) -> int:
  flt = SafetyFilter.load(args.extra_dir)
  items = _read_texts(args.inp)   # all lines validated before anything is written
  counts = collections.Counter()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for it in items:
      d = flt.check(it["text"], role=it["role"])
      out = {"id": it["id"], "blocked": d.blocked, "category": d.category, "rule": d.rule}
      if args.all:
        out["hits"] = [h.rule for h in flt.matches(it["text"], role=it["role"])]
      f.write(json.dumps(out, ensure_ascii=False) + "\n")
      counts[d.category if d.category else "pass"] += 1
  os.replace(tmp, args.out)
  summary = ", ".join(f"{k} {v}" for k, v in counts.most_common())
  print(f"{len(items)} texts -> {args.out}: {summary}", file=sys.stderr)
  return 0


def eval_(args: argparse.Namespace) -> int:
  flt = SafetyFilter.load(args.extra_dir)
  sets = args.set or sorted(glob.glob(os.path.join(builtin_dir(), "*.jsonl")))
  reports = {}
  for path in sets:
    if not os.path.exists(path):
      print(f"skipping {path}: no such file", file=sys.stderr)
      continue
    reports[path] = evaluate(flt, read_labelled(path))
    print(format_report(reports[path], title=os.path.basename(path)))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(reports, f, ensure_ascii=False, indent=1)
  return 0


def _main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.safety", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  c = sub.add_parser("check", help="decide about each text of a JSONL file")
  c.add_argument("--in", dest="inp", required=True, help='JSONL lines {"id", "text", "role"?}')
  c.add_argument("--out", required=True, help='JSONL lines {"id", "blocked", "category", "rule"}')
  c.add_argument("--all", action="store_true", help="also list every rule that fires")
  e = sub.add_parser("eval", help="precision/recall per category on labelled sets")
  e.add_argument("--set", action="append", help="labelled JSONL (repeatable); default: the bundled sets")
  e.add_argument("--json", help="also write the reports here")
  for q in (c, e):
    q.add_argument("--extra-dir", action="append", default=[], help="a directory of extra lists (repeatable)")
  args = p.parse_args(argv)
  try:
    return check(args) if args.cmd == "check" else eval_(args)
  except UserError:
    raise  # already one line; --debug shows where it came from
  except (ValueError, RuleError, OSError) as e:
    raise UserError(str(e)) from e


def main(argv: list[str] | None = None) -> int:
  """The command line under telugu_jax.errors.run_cli: a user's mistake is one line and exit code 2."""
  return run_cli(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
