"""Scores from the `/rate` page: a blind rating sheet in, one SQLite row per click, the filled sheet out.

The evaluation kit exports a blind sheet (CSV, one row per question x response, systems hidden behind
response ids and shuffled per question, the key kept in a separate file); raters score each response on
four criteria, 0-3; the kit imports the filled sheets. This module serves such a sheet to the page,
stores every click at once (SQLite, WAL, synchronous=FULL: a reload or a crash loses nothing), and
exports the sheet again with the score cells filled, keeping the sheet's own columns and row order, so
what the kit wrote is what it reads back.

Column names live here, in one place (`QUESTION_ID` ... `CRITERIA`). The kit's module
(`telugu_jax.evaluate.rating`) was being written at the same time; when it exists, these names must be
the ones it writes. A sheet that names the systems (a `system` column) is refused: it would un-blind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sqlite3
import threading
import time

QUESTION_ID = "question_id"
CATEGORY = "category"
QUESTION = "question"
RESPONSE_ID = "response_id"
RESPONSE = "response"
RATER = "rater"  # optional column: filled with the rater's name on export when the sheet has it
CRITERIA = ("relevance", "fluency", "completeness", "factuality")
SCORES = (0, 1, 2, 3)
REQUIRED = (QUESTION_ID, QUESTION, RESPONSE_ID, RESPONSE, *CRITERIA)
UNBLINDING = ("system", "model")

_SCHEMA = """CREATE TABLE IF NOT EXISTS scores (
  sheet TEXT NOT NULL, rater TEXT NOT NULL, question_id TEXT NOT NULL, response_id TEXT NOT NULL,
  criterion TEXT NOT NULL, score INTEGER NOT NULL CHECK (score BETWEEN 0 AND 3), updated REAL NOT NULL,
  PRIMARY KEY (sheet, rater, question_id, response_id, criterion))"""


class RatingError(ValueError):
  """A sheet or a score the store cannot take; the message says what to fix."""


def read_sheet(path: str) -> tuple[list[str], list[dict]]:
  """The header and rows of a blind sheet, checked: required columns present, no system names, ids unique."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or [])
    rows = list(reader)
  missing = [c for c in REQUIRED if c not in header]
  if missing:
    raise RatingError(f"{path}: the sheet lacks column(s) {missing}; expected the evaluation kit's blind sheet "
                      f"with columns {list(REQUIRED)}")
  if leak := [c for c in header if c.strip().lower() in UNBLINDING]:
    raise RatingError(f"{path}: column(s) {leak} name the systems; load the blind sheet and keep the key apart")
  seen = set()
  for n, row in enumerate(rows, start=2):
    key = (row[QUESTION_ID], row[RESPONSE_ID])
    if not all(key):
      raise RatingError(f"{path}:{n}: empty {QUESTION_ID} or {RESPONSE_ID}")
    if key in seen:
      raise RatingError(f"{path}:{n}: response {key[1]!r} of question {key[0]!r} appears twice")
    seen.add(key)
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
    self._valid = {(r[QUESTION_ID], r[RESPONSE_ID]) for r in self.rows}
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
    self._lock = threading.Lock()
    self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=FULL")
    self._db.execute(_SCHEMA)

  def close(self) -> None:
    with self._lock:
      self._db.close()

  def items_json(self) -> dict:
    """Questions in sheet order, each with its responses in sheet order (the kit shuffled them)."""
    questions: dict[str, dict] = {}
    for r in self.rows:
      q = questions.setdefault(r[QUESTION_ID], {"question_id": r[QUESTION_ID], "category": r.get(CATEGORY, ""),
                                                "question": r[QUESTION], "responses": []})
      q["responses"].append({"response_id": r[RESPONSE_ID], "response": r[RESPONSE]})
    return {"sheet": os.path.basename(self.sheet_path), "criteria": list(CRITERIA), "scores": list(SCORES),
            "questions": list(questions.values())}

  def _check(self, rater: str, question_id: str, response_id: str, criterion: str) -> str:
    rater = rater.strip()
    if not rater or len(rater) > 80:
      raise RatingError("give a rater name (1-80 characters) before scoring")
    if (question_id, response_id) not in self._valid:
      raise RatingError(f"question {question_id!r} has no response {response_id!r} in this sheet")
    if criterion not in CRITERIA:
      raise RatingError(f"unknown criterion {criterion!r}; one of {list(CRITERIA)}")
    return rater

  def save(self, rater: str, question_id: str, response_id: str, criterion: str, score) -> None:
    """Store one score (committed before returning); `score=None` clears it."""
    rater = self._check(rater, question_id, response_id, criterion)
    if score is not None and (isinstance(score, bool) or not isinstance(score, int) or score not in SCORES):
      raise RatingError(f"a score is an integer 0-3 (or null to clear), got {score!r}")
    key = (self.sheet_id, rater, question_id, response_id, criterion)
    with self._lock:
      if score is None:
        self._db.execute("DELETE FROM scores WHERE sheet=? AND rater=? AND question_id=? AND response_id=? "
                         "AND criterion=?", key)
      else:
        self._db.execute("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                         "score=excluded.score, updated=excluded.updated", (*key, score, time.time()))

  def scores(self, rater: str) -> dict[str, dict[str, dict[str, int]]]:
    """{question_id: {response_id: {criterion: score}}} of one rater."""
    with self._lock:
      got = self._db.execute("SELECT question_id, response_id, criterion, score FROM scores WHERE sheet=? AND "
                             "rater=?", (self.sheet_id, rater.strip())).fetchall()
    out: dict = {}
    for q, r, c, s in got:
      out.setdefault(q, {}).setdefault(r, {})[c] = s
    return out

  def export_csv(self, rater: str) -> str:
    """The sheet with this rater's scores filled in (empty cells where none was given yet)."""
    scores = self.scores(rater)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n")
    writer.writeheader()
    for row in self.rows:
      got = scores.get(row[QUESTION_ID], {}).get(row[RESPONSE_ID], {})
      out = dict(row)
      for c in CRITERIA:
        out[c] = "" if c not in got else str(got[c])
      if RATER in self.header:
        out[RATER] = rater.strip()
      writer.writerow(out)
    return buf.getvalue()
