"""The rating store against the evaluation kit: the kit's own `export_sheets` makes the blind sheet, every
score is stored at once and kept across a restart, and the exported sheet goes back through the kit's own
`import_sheet` (with the key) to the scores that were clicked."""

from __future__ import annotations

import csv
import io
import itertools
import json

import httpx
import pytest

from telugu_jax.data.records import Turn
from telugu_jax.evaluate.questions import Question
from telugu_jax.evaluate.rating import CRITERIA, RatingSheetError, export_sheets, import_sheet, read_key
from telugu_jax.serve import ratings as R
from telugu_jax.serve.app import create_app
from telugu_jax.serve.engine import Engine

from .conftest import LiveServer

QUESTIONS = [  # written for these tests
    Question("q001", "factual", (Turn("user", "భారతదేశ రాజధాని ఏది?"),), "భారతదేశ రాజధాని న్యూఢిల్లీ."),
    Question("q002", "creative", (Turn("user", "వర్షం గురించి ఒక వాక్యం రాయండి."),), None),
]
ANSWERS = {
    "base": {"q001": "ముంబై.", "q002": "వర్షం."},
    "sft": {"q001": "భారతదేశ రాజధాని న్యూఢిల్లీ.", "q002": "వాన చినుకులు నేలను తాకి మట్టి వాసన లేపాయి."},
    "full": {"q001": "రాజధాని ఢిల్లీ నగరం, అది యమునా నది ఒడ్డున ఉంది.",
             "q002": "ఆకాశం నుండి నీళ్ళు, \"చల్లగా\", పడుతున్నాయి."},
}


def kit_sheet(out_dir) -> tuple[str, str]:
  """(blind sheet, key) as the evaluation kit writes them."""
  made = export_sheets(QUESTIONS, ANSWERS, str(out_dir), raters=("rater1",))
  return made["sheets"]["rater1"], made["key"]


@pytest.fixture
def sheet(tmp_path):
  return kit_sheet(tmp_path / "kit")


def parse(text: str) -> list[dict]:
  return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_filled_sheet_round_trips_through_the_kit_and_survives_a_restart(tmp_path, sheet):
  sheet_path, key_path = sheet
  db = str(tmp_path / "scores.sqlite")
  store = R.RatingStore(db, sheet_path)
  items = [r["item"] for r in store.rows]
  assert len(items) == 6
  clicked = {}
  for n, (item, criterion) in enumerate(itertools.product(items, CRITERIA)):
    clicked[item, criterion] = (n * 7) % 4
    store.save("సీత", item, criterion, 3 - clicked[item, criterion])  # changed below: the last click counts
    store.save("సీత", item, criterion, clicked[item, criterion])
  store.save("సీత", items[0], CRITERIA[3], None)              # cleared ...
  store.save("సీత", items[0], CRITERIA[3], clicked[items[0], CRITERIA[3]])  # ... and given again
  store.save_comment("సీత", items[1], "  చాలా చిన్న సమాధానం  ")
  store.save("రాము", items[0], "relevance", 0)               # another rater, kept apart
  store.close()  # as a crash would: nothing is written at close that was not committed before
  again = R.RatingStore(db, sheet_path)
  exported = tmp_path / "సీత.csv"
  exported.write_text(again.export_csv("సీత"), encoding="utf-8")
  ratings = import_sheet(str(exported), read_key(key_path))  # the kit's import, un-blinded with its key
  assert {r.rater for r in ratings} == {"సీత"} and len(ratings) == 6
  key = read_key(key_path)
  for r in ratings:
    assert r.system == key[r.item]["system"]
    assert dict(r.scores) == {c: clicked[r.item, c] for c in CRITERIA}
    assert r.comment == ("చాలా చిన్న సమాధానం" if r.item == items[1] else "")
  # The rest of the sheet is the kit's, unchanged: columns, order, texts.
  with open(sheet_path, encoding="utf-8-sig") as f:
    original = list(csv.DictReader(f))
  rows = parse(exported.read_text(encoding="utf-8"))
  assert [list(r) for r in rows] == [list(r) for r in original]
  for got, want in zip(rows, original, strict=True):
    assert {k: v for k, v in got.items() if k not in CRITERIA and k != "comment"} == \
        {k: v for k, v in want.items() if k not in CRITERIA and k != "comment"}


def test_a_partial_sheet_exports_empty_cells_the_kit_refuses_to_import(tmp_path, sheet):
  sheet_path, key_path = sheet
  store = R.RatingStore(str(tmp_path / "s.sqlite"), sheet_path)
  first = store.rows[0]["item"]
  store.save("సీత", first, "fluency", 2)
  rows = parse(store.export_csv("సీత"))
  assert [(r["item"], r["fluency"], r["relevance"]) for r in rows[:2]] == [(first, "2", ""), (rows[1]["item"], "", "")]
  path = tmp_path / "సీత.csv"
  path.write_text(store.export_csv("సీత"), encoding="utf-8")
  with pytest.raises(RatingSheetError, match="missing score"):
    import_sheet(str(path), read_key(key_path))


@pytest.mark.parametrize("args,words", [
    (("సీత", 0, "relevance", 4), "0-3"),
    (("సీత", 0, "relevance", "2"), "0-3"),
    (("సీత", 0, "relevance", True), "0-3"),
    (("సీత", 0, "beauty", 2), "unknown criterion"),
    (("సీత", None, "relevance", 2), "not in this sheet"),
    (("  ", 0, "relevance", 2), "rater name"),
    (("a/b", 0, "relevance", 2), "rater name"),
])
def test_bad_scores_are_refused(tmp_path, sheet, args, words):
  store = R.RatingStore(str(tmp_path / "s.sqlite"), sheet[0])
  rater, row, criterion, score = args
  item = "q009-A" if row is None else store.rows[row]["item"]
  with pytest.raises(R.RatingError, match=words):
    store.save(rater, item, criterion, score)
  assert store.scores(rater) == {}


def test_bad_sheets_are_refused(tmp_path, sheet):
  with open(sheet[0], encoding="utf-8-sig") as f:
    header, *rows = list(csv.reader(f))

  def write(name, header, rows):
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline="") as f:
      csv.writer(f).writerows([header, *rows])
    return str(path)

  fluency = header.index("fluency")
  cases = [
      (write("a.csv", header[:fluency] + header[fluency + 1:], [r[:fluency] + r[fluency + 1:] for r in rows]),
       "lacks column"),
      (write("b.csv", header + ["system"], [r + ["base"] for r in rows]), "name the systems"),
      (write("c.csv", header, rows + rows[:1]), "appears again"),
      (write("d.csv", header, []), "no rows"),
      (sheet[1], "lacks column"),  # the key file is not a sheet
  ]
  for path, words in cases:
    with pytest.raises(R.RatingError, match=words):
      R.RatingStore(str(tmp_path / "x.sqlite"), path)


def test_rating_api_validates_and_saves(tmp_path, sheet, tiny_models):
  store = R.RatingStore(str(tmp_path / "s.sqlite"), sheet[0])
  with LiveServer(create_app(Engine(tiny_models), ratings=store)) as url:
    items = httpx.get(url + "/rate/api/items").json()
    assert [q["question_id"] for q in items["questions"]] == ["q001", "q002"]
    assert [it["item"] for it in items["questions"][0]["items"]] == ["q001-A", "q001-B", "q001-C"]
    assert items["questions"][0]["reference"] == "భారతదేశ రాజధాని న్యూఢిల్లీ." and items["comments"]
    assert not any(s in str(items) for s in ANSWERS)  # no system name reaches the page
    ok = {"rater": "సీత", "item": "q002-B", "criterion": "fluency", "score": 1}
    assert httpx.post(url + "/rate/api/score", json=ok).status_code == 200
    assert httpx.post(url + "/rate/api/comment", json={**ok, "comment": "బాగుంది"}).status_code == 200
    bad = httpx.post(url + "/rate/api/score", json={**ok, "score": 7})
    assert bad.status_code == 400 and "0-3" in bad.json()["error"]["message"]
    assert httpx.get(url + "/rate/api/scores", params={"rater": "సీత"}).json()["scores"] == {
        "q002-B": {"fluency": 1, "comment": "బాగుంది"}}
    for route, body in (("score", {**ok, "rater": "\ud800"}), ("comment", {**ok, "comment": "a\udfffb"}),
                        ("comment", {**ok, "item": "q002-\ud800"}), ("score", {**ok, "criterion": 5})):
      raw = json.dumps(body)   # ASCII escapes: the lone surrogates travel as valid JSON
      r = httpx.post(f"{url}/rate/api/{route}", content=raw, headers={"Content-Type": "application/json"})
      assert r.status_code == 400, (route, body, r.text)
    export = httpx.get(url + "/rate/export.csv", params={"rater": "సీత"})
    assert export.headers["content-type"].startswith("text/csv")
    assert "filename*=UTF-8''%E0%B0%B8%E0%B1%80%E0%B0%A4.csv" in export.headers["content-disposition"]
    assert export.text == store.export_csv("సీత")


def test_rate_routes_without_a_sheet_say_how_to_load_one(tiny_models):
  with LiveServer(create_app(Engine(tiny_models))) as url:
    r = httpx.get(url + "/rate/api/items")
    assert r.status_code == 404 and "--rate-sheet" in r.json()["error"]["message"]
