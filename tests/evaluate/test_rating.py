"""Rating kit: blind export, every kind of bad cell rejected with row and column, a full round trip whose
aggregates are computed by hand here, and Krippendorff's alpha against the published example."""

import csv

import numpy as np
import pytest

from telugu_jax.data.records import Turn
from telugu_jax.evaluate import rating as R
from telugu_jax.evaluate.questions import Question

QUESTIONS = [Question(f"q{i}", cat, (Turn("user", p),), ref) for i, (cat, p, ref) in enumerate([
    ("factual", "భారతదేశ రాజధాని ఏది?", "న్యూఢిల్లీ."),
    ("creative", "వర్షం గురించి ఒక కవిత రాయండి.", None),
    ("translation", "తెలుగులోకి అనువదించండి: Good morning.", "శుభోదయం."),
    ("factual", "గోదావరి నది ఎక్కడ పుడుతుంది?", "మహారాష్ట్రలోని నాసిక్ దగ్గర."),
    ("creative", "ఒక చిన్న కథ చెప్పండి.", None),
    ("factual", "సూర్యుడు ఏ దిక్కున ఉదయిస్తాడు?", "తూర్పున."),
])]
ANSWERS = {"base": {q.id: f"మొదటి జవాబు {q.id}" for q in QUESTIONS},
           "sft": {q.id: f"రెండో జవాబు {q.id}" for q in QUESTIONS}}


def _read(path):
  with open(path, encoding="utf-8-sig", newline="") as f:
    return list(csv.DictReader(f))


def _write(path, rows):
  with open(path, "w", encoding="utf-8-sig", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(R.SHEET_COLUMNS))
    w.writeheader()
    w.writerows(rows)


# Scores by (rater, system): relevance, fluency, completeness, factuality.
FILL = {("alice", "sft"): (3, 2, 2, 3), ("alice", "base"): (1, 0, 1, 1),
        ("bob", "sft"): (2, 3, 2, 3), ("bob", "base"): (1, 0, 0, 1)}


def _fill(out, rater, key):
  rows = _read(out["sheets"]["rater1"])
  for row in rows:
    for c, s in zip(R.CRITERIA, FILL[(rater, key[row["item"]]["system"])], strict=True):
      row[c] = str(s)
  path = out["sheets"]["rater1"].replace("rater1.csv", f"{rater}.csv")
  _write(path, rows)
  return path, rows


@pytest.fixture
def exported(tmp_path):
  return R.export_sheets(QUESTIONS, ANSWERS, str(tmp_path / "rating"), raters=("rater1", "rater2"), seed=3)


def test_export_is_blind_and_shuffled(exported):
  rows = _read(exported["sheets"]["rater1"])
  assert len(rows) == 12 and exported["items"] == 12
  assert rows == _read(exported["sheets"]["rater2"])
  assert "system" not in rows[0] and not {"base", "sft"} & {v for r in rows for v in r.values()}
  key = R.read_key(exported["key"])
  order = {q.id: tuple(key[f"{q.id}-{x}"]["system"] for x in "AB") for q in QUESTIONS}
  assert set(order.values()) == {("base", "sft"), ("sft", "base")}  # both orders occur: shuffled per question
  assert all(r["response"] == ANSWERS[key[r["item"]]["system"]][r["question_id"]] for r in rows)


def test_round_trip_aggregates_by_hand(exported):
  key = R.read_key(exported["key"])
  paths = [_fill(exported, "alice", key)[0], _fill(exported, "bob", key)[0]]
  ratings = R.import_sheets(paths, exported["key"])
  assert len(ratings) == 24
  agg = R.aggregate(ratings)
  sft, base = agg["systems"]["sft"], agg["systems"]["base"]
  # sft relevance over 6 questions: alice 3 x 6, bob 2 x 6 -> mean 2.5, counts [0, 0, 6, 6]
  assert sft["all"]["relevance"] == {"mean": 2.5, "n": 12, "counts": [0, 0, 6, 6]}
  # base completeness: alice 1, bob 0 -> 0.5
  assert base["all"]["completeness"]["mean"] == 0.5
  # per category: 3 factual questions, sft fluency alice 2, bob 3 -> 2.5 over 6 scores
  assert sft["factual"]["fluency"] == {"mean": 2.5, "n": 6, "counts": [0, 0, 3, 3]}
  # overall of sft: (3+2+2+3 + 2+3+2+3) / 8 = 20/8
  assert sft["all"]["overall"]["mean"] == pytest.approx(20 / 8)
  # agreement: factuality is identical for both raters (3 for sft, 1 for base) -> alpha 1
  assert agg["agreement"]["factuality"] == pytest.approx(1.0)
  assert agg["agreement"]["method"] == "krippendorff_alpha_ordinal" and agg["agreement"]["raters"] == ["alice", "bob"]
  # relevance: alice (3 sft, 1 base), bob (2 sft, 1 base) -> same as the alpha of that matrix
  rel = np.array([[3 if key[i]["system"] == "sft" else 1 for i in sorted(key)],
                  [2 if key[i]["system"] == "sft" else 1 for i in sorted(key)]], float)
  assert agg["agreement"]["relevance"] == pytest.approx(R.krippendorff_alpha(rel))
  assert 0 < agg["agreement"]["relevance"] < 1


@pytest.mark.parametrize("bad, column, message", [
    ({"fluency": "4"}, "'fluency' (H)", "'4' is not a score"),
    ({"completeness": ""}, "'completeness' (I)", "missing score"),
    ({"question_id": "q99"}, "'question_id' (B)", "'q99' is not in the key"),
    ({"item": "q99-A"}, "'item' (A)", "not in the key"),
    ({"relevance": "good"}, "'relevance' (G)", "'good' is not a score"),
])
def test_import_rejects_bad_cells_naming_row_and_column(exported, bad, column, message):
  key = R.read_key(exported["key"])
  path, rows = _fill(exported, "alice", key)
  rows[4].update(bad)  # the 5th data row is spreadsheet row 6
  _write(path, rows)
  with pytest.raises(R.RatingSheetError) as e:
    R.import_sheets([path], exported["key"])
  assert any(f"row 6, column {column}" in err and message in err for err in e.value.errors), e.value.errors


def test_import_reports_all_problems_and_missing_rows(exported):
  key = R.read_key(exported["key"])
  path, rows = _fill(exported, "alice", key)
  rows[0]["fluency"] = "4"
  rows[1]["factuality"] = "-1"
  _write(path, rows[:-1] + [rows[0]])  # last item missing, first item duplicated
  with pytest.raises(R.RatingSheetError) as e:
    R.import_sheets([path], exported["key"])
  errs = "\n".join(e.value.errors)
  assert "row 2, column 'fluency'" in errs and "row 3, column 'factuality'" in errs
  assert "appears again (first on row 2)" in errs and "have no row" in errs


def test_krippendorff_published_example():
  # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units with gaps:
  # alpha nominal 0.743, ordinal 0.815, interval 0.849.
  n = np.nan
  data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
          [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
  assert R.krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
  assert R.krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
  assert R.krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)
  assert R.krippendorff_alpha([[1, 1], [1, 1]]) is None  # one value only: undefined
  kd = pytest.importorskip("krippendorff")
  for m in ("nominal", "ordinal", "interval"):
    assert R.krippendorff_alpha(data, m) == pytest.approx(kd.alpha(reliability_data=data, level_of_measurement=m))
