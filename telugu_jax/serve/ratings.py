"""Scores from the `/rate` page: a blind rating sheet in, one SQLite row per click, the filled sheet out.

The evaluation kit (`telugu_jax.evaluate.rating.export_sheets`) writes a blind sheet per rater: one row per
item (a question x a system, shown as `q001-B`, systems shuffled per question), the key kept in a separate
file; raters score each item on four criteria, 0-3, and may comment; `import_sheet` reads the filled sheet
back and names the rater after the file. This module serves such a sheet to the page, stores every click at
once (SQLite, WAL, synchronous=FULL: a reload or a crash loses nothing), and exports the sheet again with
this rater's scores and comments filled in, keeping the sheet's own columns and row order, written the way
the kit writes sheets (UTF-8 with BOM), so what the kit wrote is what it reads back.

Column names and the score scale come from the kit's module, the one place they are defined. A sheet that
names the systems (a `system` column, as the key file has) is refused: serving it would un-blind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sqlite3
import threading
import time

from telugu_jax.conversation import unicode_problem
from telugu_jax.evaluate.rating import CRITERIA, SCORES, SHEET_COLUMNS

ITEM, QUESTION_ID, CATEGORY, PROMPT, REFERENCE, RESPONSE, COMMENT = (
    "item", "question_id", "category", "prompt", "reference", "response", "comment")
assert {ITEM, QUESTION_ID, CATEGORY, PROMPT, REFERENCE, RESPONSE, COMMENT} <= set(SHEET_COLUMNS), SHEET_COLUMNS
REQUIRED = (ITEM, QUESTION_ID, PROMPT, RESPONSE, *CRITERIA)
UNBLINDING = ("system", "model")
MAX_COMMENT = 2000

_SCHEMA = """CREATE TABLE IF NOT EXISTS cells (
  sheet TEXT NOT NULL, rater TEXT NOT NULL, item TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
  updated REAL NOT NULL, PRIMARY KEY (sheet, rater, item, field))"""


class RatingError(ValueError):
  """A sheet or a score the store cannot take; the message says what to fix."""


def read_sheet(path: str) -> tuple[list[str], list[dict]]:
  """The header and rows of a blind sheet, checked: required columns present, no system names, items unique."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    rows = list(reader)
  missing = [c for c in REQUIRED if c not in header]
  if missing:
    raise RatingError(f"{path}: the sheet lacks column(s) {missing}; load a blind sheet written by the evaluation "
                      f"kit (telugu_jax.evaluate.rating.export_sheets), columns {list(SHEET_COLUMNS)}")
  if leak := [c for c in header if c.lower() in UNBLINDING]:
    raise RatingError(f"{path}: column(s) {leak} name the systems; load the blind sheet and keep the key apart")
  seen: dict[str, int] = {}
  for n, row in enumerate(rows, start=2):
    if not row[ITEM].strip() or not row[QUESTION_ID].strip():
      raise RatingError(f"{path}: row {n}: empty {ITEM} or {QUESTION_ID}")
    if row[ITEM] in seen:
      raise RatingError(f"{path}: row {n}: item {row[ITEM]!r} appears again (first on row {seen[row[ITEM]]})")
    seen[row[ITEM]] = n
  if not rows:
    raise RatingError(f"{path}: the sheet has no rows")
  return header, rows


class RatingStore:
  """One blind sheet and the SQLite file its scores go to (several raters, several sheets per file)."""

  def __init__(self, db_path: str, sheet_path: str):
    self.sheet_path = sheet_path
    self.header, self.rows = read_sheet(sheet_path)
    with open(sheet_path, "rb") as f:
      self.sheet_id = hashlib.sha256(f.read()).hexdigest()[:16]  # scores of another sheet never mix in
    self._items = {r[ITEM] for r in self.rows}
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
    self._lock = threading.Lock()
    self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)  # autocommit
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=FULL")
    self._db.execute(_SCHEMA)

  def close(self) -> None:
    with self._lock:
      self._db.close()

  def items_json(self) -> dict:
    """Questions in sheet order, each with its items in sheet order (the kit shuffled the systems)."""
    questions: dict[str, dict] = {}
    for r in self.rows:
      q = questions.setdefault(r[QUESTION_ID], {
          "question_id": r[QUESTION_ID], "category": r.get(CATEGORY, ""), "prompt": r[PROMPT],
          "reference": r.get(REFERENCE, ""), "items": []})
      q["items"].append({"item": r[ITEM], "response": r[RESPONSE]})
    return {"sheet": os.path.basename(self.sheet_path), "criteria": list(CRITERIA), "scores": list(SCORES),
            "comments": COMMENT in self.header, "questions": list(questions.values())}

  def _check(self, rater: str, item: str) -> str:
    for what, text in (("rater", rater), ("item", item)):
      if (why := unicode_problem(text)) is not None:
        raise RatingError(f"the {what} is not valid text: {why}")
    rater = rater.strip()
    if not rater or len(rater) > 80 or any(c in rater for c in '/\\:*?"<>|'):
      raise RatingError("give a rater name (1-80 characters, none of / \\ : * ? \" < > |: it names the exported "
                        "file, and the kit names the rater after the file) before scoring")
    if item not in self._items:
      raise RatingError(f"item {item!r} is not in this sheet")
    return rater

  def _put(self, rater: str, item: str, field: str, value: str | None) -> None:
    key = (self.sheet_id, rater, item, field)
    with self._lock:
      if value is None:
        self._db.execute("DELETE FROM cells WHERE sheet=? AND rater=? AND item=? AND field=?", key)
      else:
        self._db.execute("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                         "value=excluded.value, updated=excluded.updated", (*key, value, time.time()))

  def save(self, rater: str, item: str, criterion: str, score) -> None:
    """Store one score (committed before returning); `score=None` clears it."""
    rater = self._check(rater, item)
    if not isinstance(criterion, str) or criterion not in CRITERIA:
      raise RatingError(f"unknown criterion {criterion!r}; one of {list(CRITERIA)}")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int) or score not in SCORES):
      raise RatingError(f"a score is an integer 0-3 (or null to clear), got {score!r}")
    self._put(rater, item, criterion, None if score is None else str(score))

  def save_comment(self, rater: str, item: str, comment: str) -> None:
    rater = self._check(rater, item)
    if COMMENT not in self.header:
      raise RatingError("this sheet has no comment column")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
      raise RatingError(f"a comment is text of at most {MAX_COMMENT} characters")
    if (why := unicode_problem(comment)) is not None:
      raise RatingError(f"the comment is not valid text: {why}; type it again")
    self._put(rater, item, COMMENT, comment.strip() or None)

  def scores(self, rater: str) -> dict[str, dict]:
    """{item: {criterion: score, "comment": text}} of one rater."""
    if (why := unicode_problem(rater)) is not None:
      raise RatingError(f"the rater is not valid text: {why}")
    with self._lock:
      got = self._db.execute("SELECT item, field, value FROM cells WHERE sheet=? AND rater=?",
                             (self.sheet_id, rater.strip())).fetchall()
    out: dict = {}
    for item, field, value in got:
      out.setdefault(item, {})[field] = value if field == COMMENT else int(value)
    return out

  def export_csv(self, rater: str) -> str:
    """The sheet with this rater's scores and comments (empty cells where none was given yet), with the BOM
    the kit writes so spreadsheet programs show Telugu."""
    cells = self.scores(rater)
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.DictWriter(buf, fieldnames=self.header)
    writer.writeheader()
    for row in self.rows:
      got = cells.get(row[ITEM], {})
      writer.writerow({**row, **{c: str(got.get(c, "")) for c in CRITERIA},
                       **({COMMENT: got.get(COMMENT, "")} if COMMENT in self.header else {})})
    return buf.getvalue()
