"""Synthetic Telugu Q&A through the same endpoint client and cache: JSON repair/reject, validation,
budgets, and a rerun that sends nothing twice."""

import json
import re
from collections import Counter

import pytest

from telugu_jax.config import load_config
from telugu_jax.data.records import read_jsonl
from telugu_jax.data.settings import SynthConfig, TranslateConfig
from telugu_jax.data.synth import CATEGORIES, TEMPLATES, JSONReplyError, parse_pairs, plan_requests, run_synth

from .conftest import assert_books_balance
from .test_translate import CONFIG

GOOD = [{"instruction": "వరి పంటకు ఎంత నీరు కావాలి?", "response": "వరి పొలంలో నాట్ల తర్వాత ఎప్పుడూ కొద్దిగా నీరు నిలిచి ఉండాలి."},
        {"instruction": "సేంద్రియ ఎరువు అంటే ఏమిటి?", "response": "పశువుల పేడ, ఆకులు వంటి సహజ పదార్థాలతో చేసిన ఎరువు."}]


def synth_answer(messages):
  prompt = messages[-1]["content"]
  cat = re.search(r"about (.+?) \(", prompt).group(1)
  k = re.search(r"This is set (\d+)", prompt).group(1)
  tmpl = next(name for name, style in TEMPLATES.items() if style in prompt)
  items = [{"instruction": f"{CATEGORIES[cat]} ప్రశ్న {k}-{tmpl}-{j}: {GOOD[j]['instruction']}",
            "response": GOOD[j]["response"]} for j in range(2)]
  if (cat, tmpl) == ("history", "factual"):   # fenced, with a trailing comma: repairable
    return "```json\n" + json.dumps(items, ensure_ascii=False)[:-1] + ",]\n```"
  if (cat, tmpl) == ("geography", "factual"):  # no JSON at all
    return "క్షమించండి, నేను ఇది చేయలేను."
  if (cat, tmpl) == ("science", "factual"):    # one item without a response
    items[1] = {"instruction": "జవాబు లేని ప్రశ్న"}
  return json.dumps(items, ensure_ascii=False)


def test_parse_pairs():
  assert parse_pairs(json.dumps(GOOD)) == (GOOD, False)
  assert parse_pairs("Here you go:\n```json\n" + json.dumps(GOOD)[:-1] + ",\n]\n```") == (GOOD, True)
  assert parse_pairs(json.dumps({"pairs": GOOD})) == (GOOD, False)
  assert parse_pairs(json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[1]))[0] == GOOD
  with pytest.raises(JSONReplyError):
    parse_pairs("no json here")
  with pytest.raises(JSONReplyError):
    parse_pairs('[{"instruction": "x", "response": }]')


def typed(cfg):
  return SynthConfig.from_dict(cfg.synth), TranslateConfig.from_dict(cfg.translate)


def _cfg(url, **synth):
  args = [f"--config.translate.base_url={url}", "--config.translate.backoff_s=0.01",
          "--config.translate.concurrency=4", "--config.synth.pairs_per_request=2"]
  args += [f"--config.synth.{k}={v}" for k, v in synth.items()]
  return load_config(CONFIG, args)


def test_synth_budget_repair_and_no_repeats(tmp_path, fake_openai):
  server = fake_openai(synth_answer)
  cache = str(tmp_path / "cache.sqlite")
  cfg = _cfg(server.url, max_requests=20)
  assert len(plan_requests(cfg.synth)) == 12 * len(TEMPLATES)
  s = run_synth(str(tmp_path / "a"), *typed(cfg), cache_path=cache, progress=False)
  s, rejected = assert_books_balance(tmp_path / "a")
  assert s["sent"] == 20 and len(server.answered()) == 20 and s["not_sent_budget"] == 12 * len(TEMPLATES) - 20
  assert s["budget_stop"] == "max_requests 20"

  cfg = _cfg(server.url, max_requests=1000)
  s = run_synth(str(tmp_path / "b"), *typed(cfg), cache_path=cache, progress=False)
  s, rejected = assert_books_balance(tmp_path / "b")
  assert s["cache_hits"] == 20 and s["sent"] == 12 * len(TEMPLATES) - 20
  answered = Counter(server.answered())
  assert len(answered) == 12 * len(TEMPLATES) and max(answered.values()) == 1
  assert Counter(st for _, st in server.log)[429] > 0  # retries happened on the way
  reasons = Counter(r["reason"] for r in rejected)
  assert reasons == {"bad_json": 1, "invalid_item": 1}
  recs = read_jsonl(tmp_path / "b" / "records.jsonl")
  assert len(recs) == 2 * 12 * len(TEMPLATES) - 2 - 1
  assert {r.meta["category"] for r in recs} == set(CATEGORIES)
  fixed = [r for r in recs if (r.meta["category"], r.meta["template"]) == ("history", "factual")]
  assert len(fixed) == 2 and all(r.meta.get("repaired") for r in fixed)
  assert all(r.source == "synth" and r.turns[0].role == "user" for r in recs)


def test_synth_cost_budget(tmp_path, fake_openai):
  server = fake_openai(synth_answer)
  cfg = _cfg(server.url, max_cost=0.001)
  cfg.translate.price_in_per_m = 100.0  # ~30 prompt tokens a request: the first wave of 4 passes $0.001
  s = run_synth(str(tmp_path / "c"), *typed(cfg), cache_path=str(tmp_path / "c.sqlite"), progress=False)
  assert s["sent"] == 4 and s["budget_stop"].startswith("max_cost") and s["estimated_cost_usd"] >= 0.001
