"""The `translate` stage: English conversations -> Telugu, through one backend interface.

    python -m telugu_jax.data translate --in runs/data/read/alpaca/records.jsonl --out runs/data/translate/alpaca \
        --config configs/data.py --config.translate.base_url=http://127.0.0.1:8000/v1

Per text: fenced code blocks pass through verbatim; in the prose between them URLs, e-mails, numbers,
inline code and placeholders are masked (`protect.py`); backends that want sentences get sentences
(lines, then sentence ends, then commas/spaces down to `max_sentence_chars`), with the separators kept
so the text is reassembled exactly; each unit is looked up in the SQLite cache (backend, model,
languages, text) and only misses are sent, each committed the moment it returns. A record whose any
unit failed is rejected (`translate_failed`), as is one whose protected tokens did not survive
(`placeholder_lost`). Tokens, requests, retries and the estimated cost go into summary.json.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from telugu_jax.data.records import Conversation, RecordError, Turn
from telugu_jax.data.settings import TranslateConfig
from telugu_jax.data.stage import Stage, StageInputError, cached, hash_files, load_summary
from telugu_jax.data.translate.backend import Backend, OpenAIBackend
from telugu_jax.data.translate.cache import TranslationCache, cache_key
from telugu_jax.data.translate.protect import PlaceholderError, mask, split_code, unmask

PROMPT_VERSION = "v1"  # part of the cache key: a changed prompt must not reuse old answers
_SENT = re.compile(r"(?<=[.!?;:])(\s+)")
_LATIN = re.compile(r"[A-Za-z]")


def split_sentences(text: str, max_chars: int = 400) -> list[tuple[bool, str]]:
  """[(translate?, piece)]: sentences to translate and the whitespace between them, verbatim.
  "".join(piece for _, piece in result) == text."""
  out: list[tuple[bool, str]] = []
  for k, part in enumerate(_SENT.split(text)):
    if k % 2 or not part.strip():
      out.append((False, part))
      continue
    while len(part) > max_chars:  # cut a long sentence at the last comma or space that fits
      cut = max(part.rfind(", ", 0, max_chars), part.rfind(" ", 0, max_chars))
      if cut <= 0:
        cut = max_chars
      else:
        cut += 1
      out.append((True, part[:cut].rstrip()))
      out.append((False, part[len(part[:cut].rstrip()):cut]))
      part = part[cut:]
    out.append((True, part))
  return out


@dataclasses.dataclass
class _Prose:
  pieces: list[tuple[bool, str]]  # (is a unit to translate, text)
  originals: list[str]


class Translator:
  """Masking, splitting, caching and reassembly around a `Backend`."""

  def __init__(self, backend: Backend, cache: TranslationCache, src_lang: str = "eng_Latn",
               tgt_lang: str = "tel_Telu", max_sentence_chars: int = 400):
    self.backend, self.cache = backend, cache
    self.src, self.tgt, self.max_chars = src_lang, tgt_lang, max_sentence_chars
    self.stats = {"units": 0, "cache_hits": 0, "sent": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}

  def _key(self, unit: str) -> str:
    return cache_key(self.backend.name, self.backend.model, self.src, self.tgt, unit, PROMPT_VERSION)

  def _plan(self, text: str) -> list[str | _Prose]:
    plan: list[str | _Prose] = []
    for is_code, piece in split_code(text):
      core = piece.strip()
      if is_code or not _LATIN.search(core):  # code, or nothing to translate (already Telugu, only numbers)
        plan.append(piece)
        continue
      lead, trail = piece[:len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()):]
      masked, originals = mask(core, self.backend.style)
      if self.backend.split_sentences:
        units = [(u and bool(_LATIN.search(s)), s) for u, s in split_sentences(masked, self.max_chars)]
      else:
        units = [(True, masked)]
      plan += [lead, _Prose(units, originals), trail]
    return plan

  def translate_texts(self, texts: Sequence[str]) -> list[str | Exception]:
    plans = [self._plan(t) for t in texts]
    units = list(dict.fromkeys(s for p in plans for x in p if isinstance(x, _Prose) for u, s in x.pieces if u))
    keys = [self._key(u) for u in units]
    self.stats["units"] += len(units)
    done = self.cache.get_many(keys)
    self.stats["cache_hits"] += len(done)
    todo = [i for i, k in enumerate(keys) if k not in done]
    errors: dict[str, Exception] = {}

    def on_done(j: int, result: str | Exception, usage: dict) -> None:
      i = todo[j]
      if isinstance(result, Exception):
        errors[units[i]] = result
        self.stats["failed"] += 1
        return
      self.stats["sent"] += 1
      self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
      self.stats["completion_tokens"] += usage.get("completion_tokens", 0)
      self.cache.put(keys[i], self.backend.name, self.backend.model, units[i], result,
                     usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
      done[keys[i]] = result

    if todo:
      self.backend.translate([units[i] for i in todo], on_done)
    out: list[str | Exception] = []
    for plan in plans:
      try:
        parts = []
        for x in plan:
          if isinstance(x, str):
            parts.append(x)
            continue
          pieces = []
          for u, s in x.pieces:
            if u and s in errors:
              raise errors[s]
            pieces.append(done[self._key(s)] if u else s)
          parts.append(unmask("".join(pieces), x.originals, self.backend.style))
        out.append("".join(parts))
      except Exception as e:  # noqa: BLE001 -- reported per record, never raised half-way
        out.append(e)
    return out


class TranslateBackendError(StageInputError):
  """Every record failed to translate: the backend (endpoint, model) is the problem, not the data."""


def make_backend(c: TranslateConfig) -> Backend:
  """The backend named by `config.translate`."""
  if c.backend == "openai":
    from telugu_jax.data.translate.client import ChatClient

    return OpenAIBackend(ChatClient.from_config(c), c.src_lang, c.tgt_lang)
  if c.backend == "indictrans2":
    from telugu_jax.data.translate.indictrans2 import IndicTrans2Backend

    return IndicTrans2Backend(c.indictrans_model, c.src_lang, c.tgt_lang, batch_size=c.batch_size,
                              max_new_tokens=c.max_new_tokens, device=c.device,
                              trust_remote_code=c.trust_remote_code)
  raise ValueError(f"unknown translate backend {c.backend!r}; choose openai or indictrans2")


def translate_into(stage: Stage, paths: Sequence[str], translator: Translator, chunk: int = 64) -> None:
  def records():
    yield from stage.read(paths)

  batch: list[Conversation] = []

  def flush() -> None:
    texts = [t.content for c in batch for t in c.turns]
    results = translator.translate_texts(texts)
    k = 0
    for conv in batch:
      res = results[k:k + len(conv.turns)]
      k += len(conv.turns)
      stage.count_in()
      err = next((r for r in res if isinstance(r, Exception)), None)
      if err is not None:
        reason = "placeholder_lost" if isinstance(err, PlaceholderError) else "translate_failed"
        stage.reject(reason, record=conv, detail=str(err)[:300])
        stage.stats.setdefault("first_error", str(err)[:300])
        continue
      turns = tuple(Turn(t.role, r) for t, r in zip(conv.turns, res, strict=True))
      meta = {**conv.meta, "translated": {"backend": translator.backend.name, "model": translator.backend.model}}
      try:
        stage.keep(dataclasses.replace(conv, turns=turns, meta=meta))
      except RecordError as e:  # the backend answered with text that cannot be encoded
        stage.reject(e.reason, record=conv, detail=str(e)[:300])
    stage.flush()
    batch.clear()

  for conv in records():
    if stage.done(conv.id):
      continue
    batch.append(conv)
    if len(batch) >= chunk:
      flush()
  if batch:
    flush()


def run_translate(paths: Sequence[str], out_dir: str, c: TranslateConfig, *, backend: Backend | None = None,
                  cache_path: str | None = None, progress: bool = True, force: bool = False) -> dict:
  """The translate stage with `config.translate` settings `c`; `backend` overrides `make_backend(c)`."""
  settings = {k: getattr(c, k) for k in ("backend", "model", "src_lang", "tgt_lang", "indictrans_model",
                                         "max_sentence_chars")}
  ihash = hash_files(paths, {"stage": "translate", "prompt": PROMPT_VERSION, **settings})
  prev = load_summary(out_dir)
  failed_before = bool(prev and prev.get("rejected", {}).get("translate_failed"))
  if not force and not failed_before and (done := cached(out_dir, ihash)):
    return done  # (records that failed for good, e.g. in an outage, are retried by the next run)
  cache = TranslationCache(cache_path or c.cache or os.path.join(out_dir, "translate_cache.sqlite"))
  try:
    backend = backend or make_backend(c)
    translator = Translator(backend, cache, c.src_lang, c.tgt_lang, c.max_sentence_chars)
    with Stage("translate", out_dir, input_hash=ihash, resume=True, progress=progress,
               retry=("translate_failed",), inputs=paths) as stage:
      translate_into(stage, paths, translator, c.chunk)
      failed = stage.rejected.get("translate_failed", 0)
      if failed and stage.n_out == 0 and failed == sum(stage.rejected.values()):
        # Nothing translated at all: the backend is down or misconfigured, not a data problem. Publishing
        # "0 records" would let the next stage carry on with nothing; the rejects are retried on the next run.
        where = f" at {c.base_url}" if c.backend == "openai" else ""
        raise TranslateBackendError(
            f"translate: all {failed} record(s) failed, none translated (first error: "
            f"{stage.stats.get('first_error', '?')}); is the {c.backend} backend{where} running and configured? "
            "Rerun when it is: failed records are retried")
      cost = (translator.stats["prompt_tokens"] * c.price_in_per_m
              + translator.stats["completion_tokens"] * c.price_out_per_m) / 1e6
      stage.stats.update(translator.stats, estimated_cost_usd=round(cost, 6),
                         cache=cache.path, cache_entries=len(cache))
      client = getattr(backend, "client", None)
      if client is not None:
        stage.stats.update(requests=client.stats["requests"], retries=client.stats["retries"])
  finally:
    cache.close()
  return stage.final
