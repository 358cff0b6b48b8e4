"""Tagging, weighted mixing with type caps, a stable hash split and the data card."""

import hashlib
from collections import Counter

import pytest

from telugu_jax.data.mix import MixConfig, run_mix, tag
from telugu_jax.data.records import Conversation, Turn, read_jsonl, write_jsonl

from .conftest import assert_books_balance

C = Conversation.single

TAGGED = [
    ("కింది వాక్యాన్ని తెలుగులోకి అనువదించండి: Good morning.", "translation"),
    ("ఈ పేరా సారాంశం రాయండి: గోదావరి నది మహారాష్ట్రలో పుడుతుంది.", "summarisation"),
    ("వర్షం మీద ఒక చిన్న కవిత రాయండి.", "creative"),
    ("భారతదేశ రాజధాని ఏది?", "question"),
    ("ఆరోగ్యంగా ఉండటానికి మూడు సూచనలు ఇవ్వండి.", "command"),
    ("Write a short story about a farmer.", "creative"),
    ("What is the capital of Telangana?", "question"),
    ("హైదరాబాదు", "other"),
]


@pytest.mark.parametrize("user,expected", TAGGED)
def test_tag_rules(user, expected):
  assert tag(C("x", user, "సరే.")) == expected


def test_multi_turn_is_conversation():
  turns = (Turn("user", "నమస్కారం!"), Turn("assistant", "నమస్కారం!"), Turn("user", "మీ పేరు ఏమిటి?"),
           Turn("assistant", "నా పేరు సహాయకుడు."))
  assert tag(Conversation("x", turns)) == "conversation"


def _records():
  recs = []
  for i in range(120):
    recs.append(C(f"a/{i}", f"ప్రశ్న సంఖ్య {i}: ఇది ఏమిటి?", f"జవాబు {i}.", source="a"))
  for i in range(80):
    recs.append(C(f"b/{i}", f"వాక్యం {i} ని తెలుగులోకి అనువదించండి: Hello {i}.", f"నమస్తే {i}.", source="b"))
  return recs


def test_weights_caps_split_and_card(tmp_path):
  write_jsonl(tmp_path / "in.jsonl", _records())
  cfg = MixConfig(weights={"a": 0.5}, type_caps={"translation": 0.3}, split=(0.8, 0.1, 0.1))
  s = run_mix([str(tmp_path / "in.jsonl")], str(tmp_path / "mix"), cfg, progress=False)
  s, rejected = assert_books_balance(tmp_path / "mix")
  kept = read_jsonl(tmp_path / "mix" / "records.jsonl")
  by_source = Counter(r.source for r in kept)
  assert by_source["a"] == 60                                   # half of a
  target = 60 + 80
  assert by_source["b"] == int(0.3 * target)                    # translation capped at 30% of the target
  assert Counter(r["reason"] for r in rejected) == {"over_source_quota": 60, "over_type_cap": 80 - int(0.3 * target)}
  # the split follows sha1 of the id, independently recomputed here
  for r in kept:
    u = int.from_bytes(hashlib.sha1((cfg.salt + "/split" + r.id).encode()).digest()[:8], "big") / 2**64
    assert r.meta["split"] == ("train" if u < 0.8 else "val" if u < 0.9 else "test")
  files = {sp: read_jsonl(tmp_path / "mix" / f"{sp}.jsonl") for sp in ("train", "val", "test")}
  assert sum(len(v) for v in files.values()) == len(kept)
  card = (tmp_path / "mix" / "data_card.md").read_text()
  assert "| a | 60 |" in card and "over_type_cap" in card and "## Assistant length" in card

  # stable: mixing a superset keeps every earlier choice of a (its hash order does not change)
  more = _records() + [C(f"a/{i}", f"కొత్త ప్రశ్న {i}?", "జవాబు.", source="a") for i in range(120, 160)]
  write_jsonl(tmp_path / "in2.jsonl", more)
  run_mix([str(tmp_path / "in2.jsonl")], str(tmp_path / "mix2"), MixConfig(split=(0.8, 0.1, 0.1)), progress=False)
  again = {r.id: r.meta["split"] for r in read_jsonl(tmp_path / "mix2" / "records.jsonl")}
  assert all(again[r.id] == r.meta["split"] for r in kept)


def test_total_and_groups(tmp_path):
  recs = _records()
  recs += [Conversation(f"t/{k}", (Turn("user", "ప్రశ్న?"), Turn("assistant", f"జవాబు {k}")), source="t",
                        meta={"group": "tree-1"}) for k in range(6)]
  write_jsonl(tmp_path / "in.jsonl", recs)
  run_mix([str(tmp_path / "in.jsonl")], str(tmp_path / "m"), MixConfig(total=100), progress=False)
  s, _ = assert_books_balance(tmp_path / "m")
  assert s["out"] <= 100 and s["out"] >= 95
  kept = read_jsonl(tmp_path / "m" / "records.jsonl")
  assert len({r.meta["split"] for r in kept if r.source == "t"}) <= 1  # one tree, one split
  with pytest.raises(ValueError, match="fraction kept"):
    MixConfig(weights={"a": 2.0})
  with pytest.raises(ValueError, match="unknown types"):
    MixConfig(type_caps={"poetry": 0.1})
