"""The demo's printed before/after and table of numbers, from an evaluation's files (no training)."""

import json
import os

from telugu_jax import demo


def _row(system, qid, category, text, finish, repetition, reference="ref"):
  return {"system": system, "set": "questions", "id": qid, "category": category, "prompt": f"q {qid}",
          "reference": reference, "text": text, "finish_reason": finish, "checks": {"repetition": repetition}}


def _write(tmp_path):
  rows = []
  for i, cat in enumerate(("creative", "factual", "instruction", "translation")):
    rows.append(_row("base", f"q{i}", cat, "చాలా\nపొడవైన వచనం", "length", 0.7 if i else 0.1))
    rows.append(_row("sft-full", f"q{i}", cat, "చిన్న జవాబు", "eos", 0.0))
  os.makedirs(tmp_path / "eval")
  with open(tmp_path / "eval" / "answers.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
  overall = lambda comp: {"n": 4, "compliance": comp, "fidelity": 100.0, "chrf_pp": 5.0 + comp / 10}
  system = lambda comp, ppl: {"questions": {"overall": overall(comp)}, "perplexity": {"heldout": {"ppl": ppl}}}
  return {"systems": {"base": system(0.0, 300.0), "sft-full": system(100.0, 150.0)}}


def test_numbers_and_printout(tmp_path, capsys):
  results = _write(tmp_path)
  numbers = demo.demo_numbers(results, str(tmp_path), "sft-full")
  assert numbers["base"]["loops"] == 3 and numbers["sft-full"]["loops"] == 0
  assert numbers["base"]["max_repetition"] == 0.7
  demo.print_samples(str(tmp_path), 3, "sft-full")
  demo.print_numbers(numbers, "sft-full")
  out = capsys.readouterr().out
  # the fixed categories, in order, not the creative one that comes first in the file
  assert [line.split("]")[0] for line in out.splitlines() if line.startswith("[")] == [
      "[factual", "[instruction", "[translation"]
  assert "still going at the token limit" in out and "stopped at <eos>" in out
  assert "3/4" in out and "0/4" in out and "(0.50x)" in out


def test_extended_data_adds_to_the_demo_set_and_keeps_its_split(tmp_path):
  """`--extended` reads the demo's files and the extended ones: ids stay unique, and a conversation held out in the
  demo's split is held out in the extended run too (the split hashes ids, not positions)."""
  from telugu_jax.data.records import read_jsonl

  base, ext = demo.bundled_conversations(), demo.bundled_conversations(extended=True)
  assert [c.id for c in ext[:len(base)]] == [c.id for c in base] and len(ext) > 2 * len(base)
  assert len({c.id for c in ext}) == len(ext)
  assert len(demo.bundled_prose(extended=True)) > len(demo.bundled_prose())
  small = demo.prepare_data(str(tmp_path / "a"))
  big = demo.prepare_data(str(tmp_path / "b"), extended=True)
  val_small = {c.id for c in read_jsonl(small["val"])}
  val_big = {c.id for c in read_jsonl(big["val"])}
  train_big = {c.id for c in read_jsonl(big["train"])}
  assert val_small < val_big and not val_big & train_big
