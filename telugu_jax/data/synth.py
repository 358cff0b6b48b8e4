"""The `synth` stage: Telugu Q&A pairs written by a strong LLM (the plan's option 3).

    python -m telugu_jax.data synth --out runs/data/synth --config configs/data.py \
        --config.translate.base_url=https://... --config.translate.model=...

12 topic categories x prompt templates; each request asks for `pairs_per_request` pairs as a JSON array
of {"instruction", "response"}. Replies are parsed; common faults (a ```json fence, text around the
array, trailing commas, curly quotes) are repaired and counted (`meta.repaired`); what still does not
parse is rejected (`bad_json`), as are items without both fields (`invalid_item`). Requests go through
the same endpoint client and the same SQLite cache as translation (backend "synth"), so a rerun or a
restart sends nothing twice. A budget (requests, tokens, money) is checked between waves of
`concurrency` requests, so it can be overshot by at most one wave.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from telugu_jax.data.readers.common import make
from telugu_jax.data.records import RecordError
from telugu_jax.data.settings import SynthConfig, TranslateConfig
from telugu_jax.data.stage import Stage, cached, hash_files
from telugu_jax.data.translate.cache import TranslationCache, cache_key
from telugu_jax.data.translate.client import ChatClient, Completion

PROMPT_VERSION = "v1"
CATEGORIES = {  # the plan's 12 topics: English name -> Telugu name
    "history": "చరిత్ర", "geography": "భూగోళశాస్త్రం", "science": "విజ్ఞానశాస్త్రం", "literature": "సాహిత్యం",
    "daily life": "దైనందిన జీవితం", "grammar": "తెలుగు వ్యాకరణం", "culture": "సంస్కృతి", "politics": "రాజకీయాలు",
    "technology": "సాంకేతికత", "health": "ఆరోగ్యం", "education": "విద్య", "agriculture": "వ్యవసాయం"}

_FORMAT = """Write {n} different instruction-response pairs in Telugu about {cat} ({cat_te}), as a native Telugu \
speaker would write them, in Telugu script (English only for unavoidable technical terms). {style}
This is set {k}: make it different from other sets on the same topic.
Reply with a JSON array only, no other text: [{{"instruction": "...", "response": "..."}}, ...]"""
TEMPLATES = {
    "factual": "Instructions are factual questions; responses answer correctly in 2-5 sentences.",
    "howto": "Instructions ask how to do something; responses give clear numbered steps.",
    "explain": "Instructions ask to explain a concept simply, as to a school student; responses explain with an "
               "example.",
    "creative": "Instructions ask for a short poem, story, letter or dialogue on the topic; responses fulfil it.",
    "opinion": "Instructions ask for advantages and disadvantages or a comparison; responses are balanced.",
}


class JSONReplyError(ValueError):
  reason = "bad_json"


def _loads(text: str) -> Any:
  return json.loads(text)


def parse_pairs(text: str) -> tuple[list[Any], bool]:
  """(items, repaired) from a model reply; `JSONReplyError` when no repair makes it parse.
  Our own small repair (no dependency) covers the faults LLMs commonly make; anything else is rejected."""
  try:
    data = _loads(text)
    repaired = False
  except json.JSONDecodeError:
    s = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip())
    start, end = s.find("["), s.rfind("]")
    if start == -1 or end <= start:
      obj_start, obj_end = s.find("{"), s.rfind("}")
      if obj_start == -1 or obj_end <= obj_start:
        raise JSONReplyError("no JSON array or object in the reply") from None
      s = "[" + s[obj_start:obj_end + 1] + "]"
    else:
      s = s[start:end + 1]
    s = s.replace("“", '"').replace("”", '"')
    s = re.sub(r",\s*([\]}])", r"\1", s)
    s = re.sub(r"}\s*{", "},{", s)  # objects without commas between them
    try:
      data = _loads(s)
    except json.JSONDecodeError as e:
      raise JSONReplyError(f"not JSON even after repair ({e.msg} at column {e.colno})") from None
    repaired = True
  if isinstance(data, dict):
    inner = next((v for v in data.values() if isinstance(v, list)), None)
    data = inner if inner is not None else [data]
  if not isinstance(data, list):
    raise JSONReplyError(f"expected a JSON array, got {type(data).__name__}")
  return data, repaired


def plan_requests(c: Any) -> list[tuple[str, str, int, str]]:
  """(category, template, set index, prompt) for every request the config asks for."""
  out = []
  for k in range(c.requests_per_prompt):
    for cat, cat_te in CATEGORIES.items():
      for name, style in TEMPLATES.items():
        out.append((cat, name, k, _FORMAT.format(n=c.pairs_per_request, cat=cat, cat_te=cat_te, style=style, k=k + 1)))
  return out


def _item_fields(item: Any) -> tuple[str, str] | None:
  if not isinstance(item, dict):
    return None
  for a, b in (("instruction", "response"), ("question", "answer"), ("prompt", "response")):
    if isinstance(item.get(a), str) and isinstance(item.get(b), str):
      return item[a], item[b]
  return None


def synth_into(stage: Stage, client: ChatClient, cache: TranslationCache, c: Any, price_in: float = 0.0,
               price_out: float = 0.0) -> None:
  reqs = plan_requests(c)
  key = [cache_key("synth", client.model, "", "tel_Telu", p, PROMPT_VERSION) for *_, p in reqs]
  replies: dict[int, str | Exception] = {}
  hits = cache.get_many(key)
  for i, k in enumerate(key):
    if k in hits:
      replies[i] = hits[k]
  stats = {"requests_planned": len(reqs), "cache_hits": len(hits), "sent": 0, "prompt_tokens": 0,
           "completion_tokens": 0}

  def cost() -> float:
    return (stats["prompt_tokens"] * price_in + stats["completion_tokens"] * price_out) / 1e6

  def over_budget() -> str | None:
    if stats["sent"] >= c.max_requests:
      return f"max_requests {c.max_requests}"
    if stats["prompt_tokens"] + stats["completion_tokens"] >= c.max_tokens:
      return f"max_tokens {c.max_tokens}"
    if cost() >= c.max_cost:
      return f"max_cost {c.max_cost}"
    return None

  todo = [i for i in range(len(reqs)) if i not in replies]
  stopped = None
  while todo and not (stopped := over_budget()):
    wave = todo[:max(1, min(client.concurrency, c.max_requests - stats["sent"]))]
    todo = todo[len(wave):]

    def on_done(j: int, result: Completion | Exception, wave=wave) -> None:
      i = wave[j]
      if isinstance(result, Exception):
        replies[i] = result
        return
      stats["sent"] += 1
      stats["prompt_tokens"] += result.prompt_tokens
      stats["completion_tokens"] += result.completion_tokens
      cache.put(key[i], "synth", client.model, reqs[i][3], result.text, result.prompt_tokens,
                result.completion_tokens)
      replies[i] = result.text

    messages = [[{"role": "user", "content": reqs[i][3]}] for i in wave]
    client.run(messages, on_done, temperature=c.temperature)
  stats["not_sent_budget"] = len(todo)
  if stopped:
    stats["budget_stop"] = stopped
  stats["estimated_cost_usd"] = round(cost(), 6)

  for i in sorted(replies):
    cat, tmpl, k, _ = reqs[i]
    where = f"synth:{cat}/{tmpl}/{k}"
    reply = replies[i]
    if isinstance(reply, Exception):
      stage.count_in()
      stage.reject("request_failed", where=where, detail=str(reply)[:300])
      continue
    try:
      items, repaired = parse_pairs(reply)
    except JSONReplyError as e:
      stage.count_in()
      stage.reject("bad_json", raw=reply, where=where, detail=str(e))
      continue
    for j, item in enumerate(items):
      stage.count_in()
      fields = _item_fields(item)
      if fields is None:
        stage.reject("invalid_item", raw=item, where=f"{where}#{j}", detail="needs string 'instruction' and 'response'")
        continue
      rid = f"synth/{cat.replace(' ', '_')}/{tmpl}/{k}/{j}"
      try:
        conv = make(rid, "synth", [("user", fields[0].strip()), ("assistant", fields[1].strip())], f"{where}#{j}",
                    category=cat, template=tmpl, repaired=repaired or None)
      except RecordError as e:
        stage.reject(e.reason, raw=item, where=f"{where}#{j}", detail=str(e))
        continue
      try:
        stage.keep(conv)
      except RecordError as e:  # the endpoint answered with text that cannot be encoded
        stage.reject(e.reason, raw=item, where=f"{where}#{j}", detail=str(e))
  stage.stats.update(stats)


def run_synth(out_dir: str, c: SynthConfig, t: TranslateConfig, *, client: ChatClient | None = None,
              cache_path: str | None = None,
              progress: bool = True, force: bool = False) -> dict:
  """`c` = config.synth, `t` = config.translate (endpoint, model, prices)."""
  settings = {k: v for k, v in dataclasses.asdict(c).items() if k != "enabled"}
  ihash = hash_files([], {"stage": "synth", "prompt": PROMPT_VERSION, "model": t.model, **settings})
  if not force and (done := cached(out_dir, ihash)):
    return done
  client = client or ChatClient.from_config(t, temperature=c.temperature)
  cache = TranslationCache(cache_path or t.cache or os.path.join(out_dir, "synth_cache.sqlite"))
  try:
    with Stage("synth", out_dir, input_hash=ihash, progress=progress, allow_empty=True) as stage:
      synth_into(stage, client, cache, c, t.price_in_per_m, t.price_out_per_m)
  finally:
    cache.close()
  return stage.final
