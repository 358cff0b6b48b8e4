"""Readers on small files typed by hand in each upstream schema; every stage's books balance."""

import gzip
import json

import pytest

from telugu_jax.data.readers import detect_format, run_read
from telugu_jax.data.records import read_jsonl
from telugu_jax.data.stage import AccountingError, Stage

from .conftest import (
  ALPACA,
  CHAT,
  DOLLY,
  FLAN,
  OASST_FLAT,
  OASST_NESTED,
  SHAREGPT,
  assert_books_balance,
  write_json,
  write_jsonl,
)


def _read(tmp_path, path, fmt="auto", **kw):
  out = tmp_path / ("out_" + path.name.replace(".", "_"))
  run_read([str(path)], str(out), fmt, progress=False, **kw)
  s, rejected = assert_books_balance(out)
  return read_jsonl(out / "records.jsonl"), rejected, s


def test_alpaca(tmp_path):
  recs, rejected, s = _read(tmp_path, write_json(tmp_path / "alpaca.json", ALPACA))
  assert s["formats"] == {str(tmp_path / "alpaca.json"): "alpaca"}
  assert s["in"] == len(ALPACA)
  assert [r.turns[0].content for r in recs] == [
      ALPACA[0]["instruction"], ALPACA[1]["instruction"] + "\n\n" + ALPACA[1]["input"], ALPACA[4]["instruction"]]
  assert recs[1].turns[1].content == ALPACA[1]["output"]
  reasons = {r["where"].rsplit("#", 1)[1].rstrip("]"): r["reason"] for r in rejected}
  assert reasons == {"2": "empty_turn", "3": "forged_role_marker", "5": "malformed"}
  assert "instruction" in next(r["detail"] for r in rejected if r["reason"] == "malformed")
  assert all(r["raw"] in ALPACA for r in rejected)  # the dropped record itself is kept


def test_dolly_with_bad_line(tmp_path):
  path = write_jsonl(tmp_path / "dolly.jsonl", DOLLY, extra_lines=['{"instruction": "సగం లైను'])
  recs, rejected, s = _read(tmp_path, path)
  assert s["in"] == 4 and len(recs) == 2
  assert recs[1].turns[0].content == DOLLY[1]["instruction"] + "\n\n" + DOLLY[1]["context"]
  assert recs[1].meta["category"] == "summarization"
  by_where = {r["where"]: r for r in rejected}
  assert by_where[f"{path}:3"]["reason"] == "malformed" and "'response'" in by_where[f"{path}:3"]["detail"]
  assert by_where[f"{path}:4"]["reason"] == "malformed" and "invalid JSON" in by_where[f"{path}:4"]["detail"]


def test_flan_chat_sharegpt(tmp_path):
  recs, rejected, _ = _read(tmp_path, write_jsonl(tmp_path / "flan.jsonl", FLAN))
  assert recs[0].turns[1].content == FLAN[0]["targets"] and recs[0].meta["task_name"] == "te_qa"
  assert [r["reason"] for r in rejected] == ["empty_turn"]

  recs, rejected, _ = _read(tmp_path, write_jsonl(tmp_path / "chat.jsonl", CHAT))
  assert len(recs) == 1 and recs[0].id == "chat/c1" and len(recs[0].turns) == 4
  assert recs[0].turns[0].content == "మీరు సహాయకుడు.\n\nనమస్కారం!"  # system folded into the first user turn
  assert sorted(r["reason"] for r in rejected) == ["bad_turns", "bad_turns"]
  recs, _, _ = _read(tmp_path, write_jsonl(tmp_path / "chat.jsonl", CHAT), system="keep")
  assert recs[0].turns[0].content == "నమస్కారం!" and recs[0].meta["system"] == "మీరు సహాయకుడు."

  recs, rejected, _ = _read(tmp_path, write_jsonl(tmp_path / "sg.jsonl", SHAREGPT))
  assert [t.role for t in recs[0].turns] == ["user", "assistant"] * 2
  assert recs[0].turns[3].content == SHAREGPT[0]["conversations"][3]["value"]
  assert rejected[0]["reason"] == "bad_turns" and "robot" in rejected[0]["detail"]


def test_oasst_best_path(tmp_path):
  path = write_jsonl(tmp_path / "oasst.jsonl", OASST_FLAT, extra_lines=["{not json"])
  recs, rejected, s = _read(tmp_path, path)
  assert s["in"] == len(OASST_FLAT) + 1
  assert len(recs) == 1
  (conv,) = recs
  assert conv.meta["path"] == ["p0", "a2", "p3", "a5"]  # rank 0 at each step; p3 has an answer, p4 does not
  by_id = {m["message_id"]: m for m in OASST_FLAT}
  assert [t.content for t in conv.turns] == [by_id[m]["text"] for m in conv.meta["path"]]
  assert [t.role for t in conv.turns] == ["user", "assistant", "user", "assistant"]
  reasons = {r.get("key", "line"): r["reason"] for r in rejected}
  assert reasons == {"a1": "not_best_path", "p4": "not_best_path", "a6": "deleted", "a7": "review_failed",
                     "p8": "under_dropped", "x9": "orphan", "line": "malformed"}
  assert s["consumed"] == 4


def test_oasst_all_paths_and_lang(tmp_path):
  path = write_jsonl(tmp_path / "oasst.jsonl", OASST_FLAT)
  recs, rejected, _ = _read(tmp_path, path, all_paths=True)
  assert sorted(r.meta["path"] for r in recs) == [["p0", "a1"], ["p0", "a2", "p3", "a5"]]
  assert {r["key"]: r["reason"] for r in rejected}["p4"] == "no_reply"
  recs, rejected, s = _read(tmp_path, path, langs=("en",))
  assert recs == [] and {r["reason"] for r in rejected} == {"lang", "under_dropped", "orphan"}


def test_oasst_nested_export(tmp_path):
  recs, rejected, s = _read(tmp_path, write_jsonl(tmp_path / "tree.jsonl", [OASST_NESTED]))
  assert s["in"] == 5 and s["formats"][str(tmp_path / "tree.jsonl")] == "oasst"
  # r4 (the only answer to q3) is deleted, so the best path stops at r2; q3 is left without a reply.
  assert [r.meta["path"] for r in recs] == [["q0", "r2"]]
  assert {r["key"]: r["reason"] for r in rejected} == {"r1": "not_best_path", "r4": "deleted", "q3": "no_reply"}
  assert rejected[0]["where"].startswith(f"{tmp_path / 'tree.jsonl'}:1/prompt")


def test_gzip_parquet_and_saved_dataset_read_the_same(tmp_path):
  import datasets
  import pyarrow as pa
  import pyarrow.parquet as pq

  good = DOLLY[:2]
  ref, _, _ = _read(tmp_path, write_jsonl(tmp_path / "d.jsonl", good))
  gz = tmp_path / "d2.jsonl.gz"
  with gzip.open(gz, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in good)
  pq.write_table(pa.Table.from_pylist(good), tmp_path / "d3.parquet")
  datasets.Dataset.from_list(good).save_to_disk(str(tmp_path / "d4"))
  for path in (gz, tmp_path / "d3.parquet", tmp_path / "d4"):
    recs, rejected, s = _read(tmp_path, path)
    assert [r.turns for r in recs] == [r.turns for r in ref], path
    assert rejected == [] and s["formats"][str(path)] == "dolly"


def test_detect_and_clear_errors(tmp_path):
  assert [detect_format(r) for r in (ALPACA[0], DOLLY[0], FLAN[0], CHAT[0], SHAREGPT[0], OASST_FLAT[0],
                                     OASST_NESTED)] == ["alpaca", "dolly", "flan", "chat", "sharegpt", "oasst",
                                                        "oasst"]
  weird = write_jsonl(tmp_path / "weird.jsonl", [{"question": "?", "answer": "!"}])
  with pytest.raises(ValueError, match="pass --format"):
    run_read([str(weird)], str(tmp_path / "o"), progress=False)
  broken = tmp_path / "broken.json"
  broken.write_text('[{"instruction": "x",', encoding="utf-8")
  with pytest.raises(ValueError, match="not valid JSON"):
    run_read([str(broken)], str(tmp_path / "o"), progress=False)
  with pytest.raises(FileNotFoundError):
    run_read([str(tmp_path / "nope.jsonl")], str(tmp_path / "o"), progress=False)


def test_stage_refuses_unbalanced_books_and_resumes(tmp_path, pairs_records):
  with pytest.raises(AccountingError):
    with Stage("t", tmp_path / "a", progress=False) as st:
      st.count_in(2)
      st.keep(pairs_records[0])
  assert not (tmp_path / "a" / "summary.json").exists()

  with pytest.raises(KeyboardInterrupt):  # killed half-way: partial files stay, no summary
    with Stage("t", tmp_path / "b", resume=True, progress=False) as st:
      for r in pairs_records[:3]:
        st.count_in()
        st.keep(r) if r.id != "te/1" else st.reject("x", record=r)
      st._rec_f.write('{"id": "te/3", "tur')  # a line cut off by the kill
      raise KeyboardInterrupt
  with Stage("t", tmp_path / "b", resume=True, progress=False) as st:
    assert [st.done(r.id) for r in pairs_records] == [True, True, True, False, False, False]
    for r in pairs_records:
      if not st.done(r.id):
        st.count_in()
        st.keep(r)
  s, rejected = assert_books_balance(tmp_path / "b")
  assert s["in"] == 6 and s["out"] == 5 and s["rejected"] == {"x": 1}
  assert [r.id for r in read_jsonl(tmp_path / "b" / "records.jsonl")] == ["te/0", "te/2", "te/3", "te/4", "te/5"]


def test_alpaca_seed_tasks_one_conversation_per_instance(tmp_path):
  seed = [{"id": "seed_task_0", "name": "capitals", "instruction": "రాష్ట్ర రాజధాని పేరు చెప్పండి.",
           "instances": [{"input": "తెలంగాణ", "output": "హైదరాబాదు"}, {"input": "కర్ణాటక", "output": "బెంగళూరు"}],
           "is_classification": False},
          {"id": "seed_task_1", "name": "empty", "instruction": "ఏదో", "instances": [], "is_classification": False}]
  recs, rejected, s = _read(tmp_path, write_jsonl(tmp_path / "seed.jsonl", seed))
  assert [r.id for r in recs] == ["seed/seed_task_0/0", "seed/seed_task_0/1"]
  assert recs[1].turns[0].content == "రాష్ట్ర రాజధాని పేరు చెప్పండి.\n\nకర్ణాటక" and recs[1].turns[1].content == "బెంగళూరు"
  assert (s["in"], s["out"], s["consumed"]) == (2, 2, 1) and [r["reason"] for r in rejected] == ["empty_turn"]
