"""The rating store: sheet checks, every score stored at once and kept across a restart, export = the sheet
with the scores filled in (parsed back with the csv module)."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from telugu_jax.serve import ratings as R
from telugu_jax.serve.app import create_app
from telugu_jax.serve.engine import Engine

from .conftest import LiveServer

SHEET_ROWS = [  # (question_id, category, question, response_id, response); written for these tests
    ("q001", "factual", "భారతదేశ రాజధాని ఏది?", "A", "భారతదేశ రాజధాని న్యూఢిల్లీ."),
    ("q001", "factual", "భారతదేశ రాజధాని ఏది?", "B", "ముంబై."),
    ("q001", "factual", "భారతదేశ రాజధాని ఏది?", "C", "రాజధాని ఢిల్లీ నగరం, అది యమునా నది ఒడ్డున ఉంది."),
    ("q002", "creative", "వర్షం గురించి ఒక వాక్యం రాయండి.", "A", "వాన చినుకులు నేలను తాకి మట్టి వాసన లేపాయి."),
    ("q002", "creative", "వర్షం గురించి ఒక వాక్యం రాయండి.", "B", "వర్షం."),
    ("q002", "creative", "వర్షం గురించి ఒక వాక్యం రాయండి.", "C", "ఆకాశం నుండి నీళ్ళు, \"చల్లగా\", పడుతున్నాయి."),
]


def write_sheet(path, rows=SHEET_ROWS, header=None):
  header = header or ["question_id", "category", "question", "response_id", "response", *R.CRITERIA]
  with open(path, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for row in rows:
      w.writerow(list(row) + [""] * (len(header) - len(row)))
  return str(path)


@pytest.fixture
def sheet(tmp_path):
  return write_sheet(tmp_path / "blind_sheet.csv")


def parse(text: str) -> list[dict]:
  return list(csv.DictReader(io.StringIO(text)))


def test_scores_survive_a_restart_and_export_fills_the_sheet(tmp_path, sheet):
  db = str(tmp_path / "scores.sqlite")
  store = R.RatingStore(db, sheet)
  store.save("సీత", "q001", "A", "relevance", 3)
  store.save("సీత", "q001", "A", "relevance", 2)   # changed: the last click counts
  store.save("సీత", "q002", "C", "factuality", 0)
  store.save("సీత", "q001", "B", "fluency", 1)
  store.save("సీత", "q001", "B", "fluency", None)  # cleared
  store.save("రాము", "q001", "A", "relevance", 1)  # another rater, kept apart
  store.close()  # as a crash would: nothing is flushed at close that was not committed before
  again = R.RatingStore(db, sheet)
  assert again.scores("సీత") == {"q001": {"A": {"relevance": 2}}, "q002": {"C": {"factuality": 0}}}
  rows = parse(again.export_csv("సీత"))
  with open(sheet, encoding="utf-8") as f:
    original = list(csv.DictReader(f))
  assert len(rows) == len(original)
  for got, want in zip(rows, original, strict=True):
    assert list(got) == list(want)  # same columns, same order
    for col in ("question_id", "category", "question", "response_id", "response"):
      assert got[col] == want[col]
    expected = {("q001", "A"): {"relevance": "2"}, ("q002", "C"): {"factuality": "0"}}.get(
        (want["question_id"], want["response_id"]), {})
    assert {c: got[c] for c in R.CRITERIA} == {c: expected.get(c, "") for c in R.CRITERIA}


@pytest.mark.parametrize("args,words", [
    (("సీత", "q001", "A", "relevance", 4), "0-3"),
    (("సీత", "q001", "A", "relevance", "2"), "0-3"),
    (("సీత", "q001", "A", "relevance", True), "0-3"),
    (("సీత", "q001", "A", "beauty", 2), "unknown criterion"),
    (("సీత", "q009", "A", "relevance", 2), "no response"),
    (("సీత", "q001", "D", "relevance", 2), "no response"),
    (("  ", "q001", "A", "relevance", 2), "rater name"),
])
def test_bad_scores_are_refused(tmp_path, sheet, args, words):
  store = R.RatingStore(str(tmp_path / "s.sqlite"), sheet)
  with pytest.raises(R.RatingError, match=words):
    store.save(*args)
  assert store.scores(args[0]) == {}


def test_bad_sheets_are_refused(tmp_path):
  cols = ["question_id", "category", "question", "response_id", "response", *R.CRITERIA]
  cases = [
      (write_sheet(tmp_path / "a.csv", header=[c for c in cols if c != "fluency"]), "lacks column"),
      (write_sheet(tmp_path / "b.csv", [r + ("base",) for r in SHEET_ROWS], header=cols[:5] + ["system"] +
                   list(R.CRITERIA)), "name the systems"),
      (write_sheet(tmp_path / "c.csv", SHEET_ROWS + SHEET_ROWS[:1]), "appears twice"),
      (write_sheet(tmp_path / "d.csv", []), "no rows"),
  ]
  for path, words in cases:
    with pytest.raises(R.RatingError, match=words):
      R.RatingStore(str(tmp_path / "x.sqlite"), path)


def test_rating_api_validates_and_saves(tmp_path, sheet, tiny_models):
  store = R.RatingStore(str(tmp_path / "s.sqlite"), sheet)
  with LiveServer(create_app(Engine(tiny_models), ratings=store)) as url:
    items = httpx.get(url + "/rate/api/items").json()
    assert [q["question_id"] for q in items["questions"]] == ["q001", "q002"]
    assert [r["response_id"] for r in items["questions"][0]["responses"]] == ["A", "B", "C"]
    assert "system" not in str(items)
    ok = {"rater": "సీత", "question_id": "q002", "response_id": "B", "criterion": "fluency", "score": 1}
    assert httpx.post(url + "/rate/api/score", json=ok).status_code == 200
    bad = httpx.post(url + "/rate/api/score", json={**ok, "score": 7})
    assert bad.status_code == 400 and "0-3" in bad.json()["error"]["message"]
    assert httpx.get(url + "/rate/api/scores", params={"rater": "సీత"}).json()["scores"] == {
        "q002": {"B": {"fluency": 1}}}
    export = httpx.get(url + "/rate/export.csv", params={"rater": "సీత"})
    assert export.headers["content-type"].startswith("text/csv")
    assert parse(export.text) == parse(store.export_csv("సీత"))


def test_rate_routes_without_a_sheet_say_how_to_load_one(tiny_models):
  with LiveServer(create_app(Engine(tiny_models))) as url:
    r = httpx.get(url + "/rate/api/items")
    assert r.status_code == 404 and "--rate-sheet" in r.json()["error"]["message"]
