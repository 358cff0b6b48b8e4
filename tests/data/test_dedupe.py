"""Dedupe: exact after normalisation, near-duplicates by MinHash LSH at the set threshold, the kept copy
chosen by the stated rule, the duplicate's id recorded."""

import json

from telugu_jax.data.dedupe import DedupeConfig, dedupe_text, minhashes, run_dedupe
from telugu_jax.data.records import Conversation, read_jsonl, write_jsonl

from .conftest import TELUGU_PAIRS, assert_books_balance

C = Conversation.single
BASE = ("హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని. ఇది మూసీ నది ఒడ్డున ఉంది. నగరంలో చార్మినార్, గోల్కొండ కోట ప్రసిద్ధ "
        "కట్టడాలు. ఇక్కడి బిర్యానీ దేశమంతటా పేరు పొందింది. నగరంలో ఎన్నో విశ్వవిద్యాలయాలు, ఐటీ సంస్థలు ఉన్నాయి.")


def kgrams(text, k=5):
  return {text[i:i + k] for i in range(len(text) - k + 1)}


def jaccard(a, b):
  return len(a & b) / len(a | b)


def test_minhash_estimates_jaccard():
  variants = [BASE.replace("ప్రసిద్ధ", "ప్రఖ్యాత"), BASE.replace("బిర్యానీ", "హలీం"), BASE[:120]]
  texts = [dedupe_text(C("a", "ప్రశ్న", t)) for t in [BASE] + variants]
  mh = minhashes(texts, DedupeConfig())
  for i in range(1, len(texts)):
    exact = jaccard(kgrams(texts[0]), kgrams(texts[i]))
    assert abs(mh[0].jaccard(mh[i]) - exact) < 0.1, (i, exact)


def test_vectorised_minhash_equals_item_by_item():
  import numpy as np
  from datasketch import MinHash

  from telugu_jax.data.dedupe import shingles

  text = dedupe_text(C("a", "ప్రశ్న", BASE))
  ours = minhashes([text], DedupeConfig())[0]
  ref = MinHash(num_perm=128, hashfunc=lambda x: x)
  ref.update_batch([int(v) for v in set(shingles(text, 5).tolist())])
  assert np.array_equal(ours.hashvalues, ref.hashvalues)


def test_exact_near_and_kept_copy(tmp_path):
  q = "హైదరాబాదు గురించి చెప్పండి."
  one_word = BASE.replace("ప్రసిద్ధ", "ప్రఖ్యాత")          # near duplicate
  shorter = BASE.rsplit(" నగరంలో ఎన్నో", 1)[0] + "."        # near duplicate, shorter answer
  different = "గోదావరి నది మహారాష్ట్రలో పుట్టి బంగాళాఖాతంలో కలుస్తుంది. " * 2
  recs = [
      C("web/1", q, BASE, source="web"),
      C("web/2", q.replace(".", " !"), BASE.replace(".", ""), source="web"),  # same after normalisation
      C("human/1", q, shorter, source="human"),
      C("web/3", q, one_word, source="web"),
      C("web/4", q, different, source="web"),
  ] + [C(f"te/{i}", u, a, source="te") for i, (u, a) in enumerate(TELUGU_PAIRS)]
  norm = {r.id: dedupe_text(r) for r in recs}
  assert 0.85 < jaccard(kgrams(norm["web/1"]), kgrams(norm["web/3"])) < 0.93
  assert 0.75 < jaccard(kgrams(norm["web/1"]), kgrams(norm["human/1"])) < 0.85
  assert jaccard(kgrams(norm["web/1"]), kgrams(norm["web/4"])) < 0.3
  write_jsonl(tmp_path / "in.jsonl", recs)

  # rule: preferred source first, so the shorter human copy is kept and names the others as its duplicates
  run_dedupe([str(tmp_path / "in.jsonl")], str(tmp_path / "a"),
             DedupeConfig(threshold=0.6, prefer_sources=("human",)), progress=False)
  s, rejected = assert_books_balance(tmp_path / "a")
  kept = {r.id for r in read_jsonl(tmp_path / "a" / "records.jsonl")}
  assert kept == {"human/1", "web/4"} | {f"te/{i}" for i in range(len(TELUGU_PAIRS))}
  dup = {r["id"]: (r["reason"], r["duplicate_of"]) for r in rejected}
  assert dup["web/1"] == ("duplicate_near", "human/1") and dup["web/3"][1] in ("human/1",)
  assert dup["web/2"] == ("duplicate_exact", "web/1")  # exact pass runs first, before near

  # rule without preference: the longer answer wins
  run_dedupe([str(tmp_path / "in.jsonl")], str(tmp_path / "b"), DedupeConfig(threshold=0.6), progress=False)
  s, rejected = assert_books_balance(tmp_path / "b")
  dup = {r["id"]: (r["reason"], r["duplicate_of"]) for r in rejected}
  assert dup["human/1"] == ("duplicate_near", "web/1") and dup["web/3"] == ("duplicate_near", "web/1")
  assert s["in"] == len(recs) and s["out"] == len(recs) - 3

  # a strict threshold keeps both near copies (Jaccard ~0.8 and ~0.92): only the exact one goes
  run_dedupe([str(tmp_path / "in.jsonl")], str(tmp_path / "c"), DedupeConfig(threshold=0.97), progress=False)
  _, rejected = assert_books_balance(tmp_path / "c")
  assert {r["id"] for r in rejected} == {"web/2"}
  rows = [json.loads(line) for line in (tmp_path / "b" / "rejected.jsonl").read_text().splitlines()]
  assert all(r["record"]["id"] == r["id"] for r in rows)  # the dropped record itself is kept
