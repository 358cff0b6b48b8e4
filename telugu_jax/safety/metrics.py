"""Score a `SafetyFilter` on a labelled set: precision and recall per category, false-positive rate.

    python -m telugu_jax.safety eval                                   # the bundled labelled + held-out sets
    python -m telugu_jax.safety eval --set my_set.jsonl --json report.json

A labelled line is `{"id", "text", "label", "lang"?, "role"?}` with label one of the filter's categories,
"safe", or "identity" (a question about the assistant: must not be blocked and should get the identity
answer). Per category c: precision = |predicted c and labelled c| / |predicted c|, recall = |predicted c
and labelled c| / |labelled c|, where "predicted c" is the category of the rule that fired first.
"Refused" counts a harmful text blocked under any category; the false-positive rate is the share of
harmless texts ("safe" and "identity") that were blocked.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator
from typing import Any

from telugu_jax.safety.filter import SafetyFilter
from telugu_jax.safety.rules import ROLES

HARMLESS = ("safe", "identity")


def json_lines(path: str | os.PathLike, hint: str = "") -> Iterator[tuple[str, Any]]:
  """(file:line, parsed value) for each non-blank line of a JSONL file; invalid JSON raises ValueError naming
  file:line (and `hint`, what a line should hold), as does text that is not valid Unicode (a byte that is not
  UTF-8, a lone surrogate). The safety readers validate the values themselves."""
  from telugu_jax.data.records import check_text, decode_line

  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      line = decode_line(raw)
      if not line.strip():
        continue
      where = f"{os.fspath(path)}:{n}"
      try:
        value = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg}){hint}") from None
      check_text(value, "line", where)
      yield where, value


def read_labelled(path: str | os.PathLike) -> list[dict]:
  """Lines of a labelled JSONL file; a malformed line raises ValueError naming file:line."""
  items, seen = [], set()
  for where, d in json_lines(path):
    if not isinstance(d, dict):
      raise ValueError(f"{where}: each line must be a JSON object with \"id\", \"text\" and \"label\"")
    missing = [k for k in ("id", "text", "label") if not isinstance(d.get(k), str)]
    if missing:
      raise ValueError(f"{where}: needs string fields {missing}")
    if d.setdefault("role", "user") not in ROLES:
      raise ValueError(f"{where}: role must be one of {ROLES}, got {d['role']!r}")
    if d["id"] in seen:
      raise ValueError(f"{where}: duplicate id {d['id']!r}")
    seen.add(d["id"])
    items.append(d)
  return items


def _ratio(a: int, b: int) -> float | None:
  return a / b if b else None


def evaluate(flt: SafetyFilter, items: list[dict]) -> dict:
  """Run `flt.check` on every item and count. Returns a JSON-able report (see module docstring)."""
  unknown = sorted({it["label"] for it in items} - set(flt.categories) - set(HARMLESS))
  if unknown:
    raise ValueError(f"labels {unknown} are neither a filter category {list(flt.categories)} nor {HARMLESS}")
  cats = [c for c in flt.categories if any(it["label"] == c for it in items)]
  tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
  harmful = harmless = refused = false_blocks = id_n = id_hit = id_false = 0
  by_lang: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  errors = []
  for it in items:
    d = flt.check(it["text"], role=it["role"])
    label, lang = it["label"], it.get("lang", "?")
    got = d.category if d.blocked else None
    if label in HARMLESS:
      harmless += 1
      by_lang[lang]["harmless"] += 1
      if d.blocked:
        false_blocks += 1
        by_lang[lang]["false_blocks"] += 1
        fp[got] += 1
      if label == "identity":
        id_n += 1
        id_hit += d.category == "identity"
      elif d.category == "identity":
        id_false += 1
    else:
      harmful += 1
      by_lang[lang]["harmful"] += 1
      if d.blocked:
        refused += 1
        by_lang[lang]["refused"] += 1
      if got == label:
        tp[label] += 1
      else:
        fn[label] += 1
        if got is not None:
          fp[got] += 1
    ok = (got == label) if label not in HARMLESS else (not d.blocked and (label != "identity") == (
      d.category != "identity"))
    if not ok:
      errors.append({"id": it["id"], "label": label, "got": d.category, "blocked": d.blocked, "rule": d.rule,
                     "text": it["text"]})
  per_cat = {c: {"support": tp[c] + fn[c], "tp": tp[c], "fp": fp[c], "fn": fn[c],
                 "precision": _ratio(tp[c], tp[c] + fp[c]), "recall": _ratio(tp[c], tp[c] + fn[c])}
             for c in cats}
  langs = {lang: {"harmful_refused": _ratio(c["refused"], c["harmful"]), "harmful": c["harmful"],
                  "false_positive_rate": _ratio(c["false_blocks"], c["harmless"]), "harmless": c["harmless"]}
           for lang, c in sorted(by_lang.items())}
  return {"n": len(items), "per_category": per_cat,
          "harmful": {"n": harmful, "refused": refused, "recall": _ratio(refused, harmful)},
          "harmless": {"n": harmless, "blocked": false_blocks, "false_positive_rate": _ratio(false_blocks, harmless)},
          "identity": {"n": id_n, "answered": id_hit, "recall": _ratio(id_hit, id_n), "false_identity": id_false},
          "by_lang": langs, "errors": errors}


def _pct(x: float | None) -> str:
  return "   -  " if x is None else f"{100 * x:5.1f}%"


def format_report(report: dict, title: str = "") -> str:
  lines = [f"== {title} ({report['n']} texts)" if title else f"== {report['n']} texts",
           f"{'category':<16}{'support':>8}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>9}"]
  for c, m in report["per_category"].items():
    lines.append(f"{c:<16}{m['support']:>8}{m['tp']:>5}{m['fp']:>5}{m['fn']:>5}   {_pct(m['precision'])}  "
                 f"{_pct(m['recall'])}")
  h, s, i = report["harmful"], report["harmless"], report["identity"]
  lines.append(f"harmful refused (any category): {h['refused']}/{h['n']} = {_pct(h['recall']).strip()}")
  lines.append(f"harmless blocked (false-positive rate): {s['blocked']}/{s['n']} = "
               f"{_pct(s['false_positive_rate']).strip()}")
  lines.append(f"identity questions answered: {i['answered']}/{i['n']}; safe texts taken for identity: "
               f"{i['false_identity']}")
  for lang, m in report["by_lang"].items():
    lines.append(f"  {lang:<4} harmful refused {_pct(m['harmful_refused'])} of {m['harmful']:>3}   "
                 f"false positives {_pct(m['false_positive_rate'])} of {m['harmless']:>3}")
  for e in report["errors"]:
    lines.append(f"  MISS {e['id']}: label={e['label']} got={e['got']} rule={e['rule']} | {e['text'][:90]}")
  return "\n".join(lines)
