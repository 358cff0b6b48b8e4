"""The manual rating kit: blind sheets for raters, validated import, un-blinding, aggregates, agreement.

    export_sheets(questions, answers, "runs/demo/eval/rating")   # sheets/<rater>.csv + key.csv (keep apart)
    ratings = import_sheets(["alice.csv", "bob.csv"], "runs/demo/eval/rating/key.csv")
    summary = aggregate(ratings)

A sheet has one row per (question, system). Systems are shuffled per question and shown as A, B, C... (the
item id `q001-B` says nothing about the system); the key file maps items back to systems and stays with
the evaluator. Raters score Relevance, Fluency, Completeness and Factuality from 0 to 3 (RUBRIC).

Importing checks every cell and reports every problem at once, each with file, row (as a spreadsheet
shows it: the header is row 1) and column: a score outside 0-3, an empty score, an item or question id
that is not in the key, a duplicated or missing item. Nothing is dropped silently.

Agreement between raters: Krippendorff's alpha with the ordinal metric (the scores are ordered categories,
not distances), per criterion and over all criteria; it handles any number of raters and missing ratings.
Written here (a coincidence matrix, ~30 lines) rather than adding a dependency; tests check it against
Krippendorff's published example and the `krippendorff` package when it is installed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

CRITERIA = ("relevance", "fluency", "completeness", "factuality")
SCORES = (0, 1, 2, 3)
SHEET_COLUMNS = ("item", "question_id", "category", "prompt", "reference", "response", *CRITERIA, "comment")
KEY_COLUMNS = ("item", "question_id", "category", "system")
RUBRIC = """\
Rate each response from 0 to 3 on four criteria. You do not know which system wrote which response; rate
each one on its own. Fill every score cell with 0, 1, 2 or 3; the comment column is optional.

relevance     3 answers exactly what was asked; 2 mostly; 1 touches the topic; 0 unrelated or empty
fluency       3 natural, correct Telugu; 2 small slips; 1 hard to read; 0 not Telugu / broken text
completeness  3 covers everything asked; 2 misses a minor part; 1 misses most; 0 nothing useful
factuality    3 all facts right (or nothing to check); 2 a minor error; 1 a major error; 0 mostly wrong

Save the sheet as CSV (UTF-8) under a file name that identifies you, and send it back.
"""


class RatingSheetError(ValueError):
  """A filled sheet that cannot be imported; `errors` lists every problem (file:row:column: what)."""

  def __init__(self, errors: Sequence[str]):
    self.errors = list(errors)
    shown = "\n  ".join(self.errors[:50])
    more = f"\n  ... and {len(self.errors) - 50} more" if len(self.errors) > 50 else ""
    super().__init__(f"{len(self.errors)} problem(s) in the rating sheets:\n  {shown}{more}")


@dataclasses.dataclass(frozen=True)
class Rating:
  rater: str
  item: str
  question_id: str
  category: str
  system: str
  scores: Mapping[str, int]      # criterion -> 0..3
  comment: str = ""


# ---- export --------------------------------------------------------------------------------------------

def _prompt_text(question) -> str:
  if len(question.prompt) == 1:
    return question.prompt[0].content
  return "\n".join(f"[{t.role}] {t.content}" for t in question.prompt)


def export_sheets(questions: Sequence, answers: Mapping[str, Mapping[str, str]], out_dir: str, *,
                  raters: Sequence[str] = ("rater1", "rater2"), seed: int = 0) -> dict:
  """Write `out_dir/sheets/<rater>.csv` (blind, identical for every rater), `out_dir/sheets/RUBRIC.txt` and
  `out_dir/key.csv`.

  Args:
    questions: `Question`s (id, category, prompt, reference).
    answers: system -> question id -> response text; a question is rated for the systems that answered it.
    raters: one sheet per name (rater names become file names).
    seed: the per-question shuffle of systems.
  """
  if len(set(raters)) != len(raters) or not raters:
    raise ValueError(f"rater names must be unique and at least one: {list(raters)}")
  rng = random.Random(seed)
  rows, key = [], []
  for q in questions:
    systems = [s for s in answers if q.id in answers[s]]
    rng.shuffle(systems)
    for i, system in enumerate(systems):
      item = f"{q.id}-{chr(ord('A') + i)}"
      rows.append({"item": item, "question_id": q.id, "category": q.category, "prompt": _prompt_text(q),
                   "reference": q.reference or "", "response": answers[system][q.id],
                   **{c: "" for c in CRITERIA}, "comment": ""})
      key.append({"item": item, "question_id": q.id, "category": q.category, "system": system})
  sheets = os.path.join(out_dir, "sheets")
  os.makedirs(sheets, exist_ok=True)
  paths = {}
  for rater in raters:
    paths[rater] = os.path.join(sheets, f"{rater}.csv")
    _write_csv(paths[rater], SHEET_COLUMNS, rows)
  with open(os.path.join(sheets, "RUBRIC.txt"), "w", encoding="utf-8") as f:
    f.write(RUBRIC)
  key_path = os.path.join(out_dir, "key.csv")
  _write_csv(key_path, KEY_COLUMNS, key)
  return {"sheets": paths, "key": key_path, "items": len(rows)}


def _write_csv(path: str, columns: Sequence[str], rows: Iterable[dict]) -> None:
  # utf-8-sig: spreadsheet programs read the BOM and show Telugu instead of mojibake.
  with open(path, "w", encoding="utf-8-sig", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns))
    w.writeheader()
    w.writerows(rows)


# ---- import --------------------------------------------------------------------------------------------

def _column_letter(index: int) -> str:
  letters = ""
  index += 1
  while index:
    index, r = divmod(index - 1, 26)
    letters = chr(ord("A") + r) + letters
  return letters


def read_key(path: str) -> dict[str, dict]:
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in KEY_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise RatingSheetError([f"{path}: the key file lacks column(s) {missing}; is this the key.csv written "
                              "by export_sheets?"])
    return {row["item"]: row for row in reader}


def import_sheet(path: str, key: Mapping[str, dict], *, rater: str | None = None) -> list[Rating]:
  """Ratings of one filled sheet; raises `RatingSheetError` listing every bad cell."""
  rater = rater or os.path.splitext(os.path.basename(path))[0]
  errors: list[str] = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise RatingSheetError([f"{path}: the file is empty"])
    header = [h.strip() for h in header]
    missing = [c for c in ("item", "question_id", *CRITERIA) if c not in header]
    if missing:
      raise RatingSheetError([f"{path}: row 1: missing column(s) {missing}; keep the header of the exported sheet"])
    col = {name: header.index(name) for name in header}
    ratings, seen = [], {}
    for row_no, cells in enumerate(reader, start=2):
      if not any(c.strip() for c in cells):
        continue
      cells = cells + [""] * (len(header) - len(cells))

      def where(name, row_no=row_no):
        return f"{path}: row {row_no}, column '{name}' ({_column_letter(col[name])})"

      item, qid = cells[col["item"]].strip(), cells[col["question_id"]].strip()
      entry = key.get(item)
      if entry is None:
        errors.append(f"{where('item')}: item {item!r} is not in the key (was the sheet exported with this key?)")
      elif qid != entry["question_id"]:
        known = any(e["question_id"] == qid for e in key.values())
        what = "belongs to another item" if known else "is not in the key"
        errors.append(f"{where('question_id')}: question id {qid!r} {what}; item {item} is question "
                      f"{entry['question_id']}")
      if item in seen:
        errors.append(f"{where('item')}: item {item!r} appears again (first on row {seen[item]})")
      seen.setdefault(item, row_no)
      scores = {}
      for c in CRITERIA:
        raw = cells[col[c]].strip()
        if raw == "":
          errors.append(f"{where(c)}: missing score; enter 0, 1, 2 or 3")
        elif raw not in {str(s) for s in SCORES} and raw not in {f"{s}.0" for s in SCORES}:
          errors.append(f"{where(c)}: {raw!r} is not a score; enter 0, 1, 2 or 3")
        else:
          scores[c] = int(float(raw))
      if entry is not None and len(scores) == len(CRITERIA):
        comment = cells[col["comment"]].strip() if "comment" in col else ""
        ratings.append(Rating(rater=rater, item=item, question_id=entry["question_id"], category=entry["category"],
                              system=entry["system"], scores=scores, comment=comment))
  unrated = [i for i in key if i not in seen]
  if unrated:
    errors.append(f"{path}: {len(unrated)} item(s) of the key have no row, e.g. {unrated[:5]}")
  if errors:
    raise RatingSheetError(errors)
  return ratings


def import_sheets(paths: Sequence[str], key_path: str) -> list[Rating]:
  """Ratings of every sheet (one rater each, named after the file); all problems of all files in one error."""
  key = read_key(key_path)
  names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  if len(set(names)) != len(names):
    raise RatingSheetError([f"two sheets have the same rater name (file name): {names}"])
  out, errors = [], []
  for p in paths:
    try:
      out.extend(import_sheet(p, key))
    except RatingSheetError as e:
      errors.extend(e.errors)
  if errors:
    raise RatingSheetError(errors)
  return out


# ---- agreement and aggregates --------------------------------------------------------------------------

def krippendorff_alpha(data: np.ndarray, metric: str = "ordinal") -> float | None:
  """Krippendorff's alpha of `data` [raters, units] (NaN = no rating); None when undefined (one value only).

  alpha = 1 - D_o / D_e from the coincidence matrix o[c, k] (each pair of values in a unit with m values
  counts 1 / (m - 1)); metrics: nominal (0/1), interval ((c - k)^2), ordinal ((sum of n_g between c and k
  minus (n_c + n_k) / 2)^2).
  """
  data = np.asarray(data, float)
  values = np.unique(data[~np.isnan(data)])
  index = {v: i for i, v in enumerate(values)}
  o = np.zeros((len(values), len(values)))
  for unit in data.T:
    vals = [index[v] for v in unit[~np.isnan(unit)]]
    m = len(vals)
    if m < 2:
      continue
    for a in range(m):
      for b in range(m):
        if a != b:
          o[vals[a], vals[b]] += 1.0 / (m - 1)
  n_c = o.sum(axis=1)
  n = n_c.sum()
  if len(values) < 2 or n <= 1:
    return None
  if metric == "nominal":
    d2 = 1.0 - np.eye(len(values))
  elif metric == "interval":
    d2 = (values[:, None] - values[None, :]) ** 2
  elif metric == "ordinal":
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    lo, hi = np.minimum.outer(np.arange(len(values)), np.arange(len(values))), \
        np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    d2 = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2) ** 2
  else:
    raise ValueError(f"metric must be 'nominal', 'ordinal' or 'interval', got {metric!r}")
  d_o = (o * d2).sum()
  d_e = (np.outer(n_c, n_c) * d2).sum() / (n - 1)
  return None if d_e == 0 else float(1.0 - d_o / d_e)


def agreement(ratings: Sequence[Rating], metric: str = "ordinal") -> dict:
  """Krippendorff's alpha per criterion and over all (units: items, or item x criterion for "all")."""
  raters = sorted({r.rater for r in ratings})
  items = sorted({r.item for r in ratings})
  if len(raters) < 2:
    return {"method": f"krippendorff_alpha_{metric}", "raters": raters, "note": "needs two or more raters"}
  r_idx, i_idx = {r: k for k, r in enumerate(raters)}, {i: k for k, i in enumerate(items)}
  grid = np.full((len(CRITERIA), len(raters), len(items)), np.nan)
  for r in ratings:
    for c, crit in enumerate(CRITERIA):
      grid[c, r_idx[r.rater], i_idx[r.item]] = r.scores[crit]
  out = {"method": f"krippendorff_alpha_{metric}", "raters": raters, "items": len(items)}
  for c, crit in enumerate(CRITERIA):
    out[crit] = krippendorff_alpha(grid[c], metric)
  out["all"] = krippendorff_alpha(np.concatenate(list(grid), axis=1), metric)
  return out


def aggregate(ratings: Sequence[Rating]) -> dict:
  """Means and score counts per system x category x criterion ("all" = every category), plus agreement.

  Every rater's score counts once: a system's mean over two raters of ten items averages twenty scores.
  """
  cells: dict = defaultdict(list)
  for r in ratings:
    for cat in (r.category, "all"):
      for crit in CRITERIA:
        cells[(r.system, cat, crit)].append(r.scores[crit])
      cells[(r.system, cat, "overall")].extend(r.scores[c] for c in CRITERIA)
  systems: dict = {}
  for (system, cat, crit), scores in sorted(cells.items()):
    counts = [scores.count(s) for s in SCORES]
    systems.setdefault(system, {}).setdefault(cat, {})[crit] = {"mean": float(np.mean(scores)), "n": len(scores),
                                                                 "counts": counts}
  return {"criteria": list(CRITERIA), "scale": list(SCORES), "systems": systems, "agreement": agreement(ratings),
          "raters": sorted({r.rater for r in ratings})}
