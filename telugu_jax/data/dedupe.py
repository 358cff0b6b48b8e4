"""The `dedupe` stage: exact duplicates (after normalisation), then near-duplicates (MinHash LSH).

    python -m telugu_jax.data dedupe --in runs/data/clean/records.jsonl --out runs/data/dedupe

Both compare instruction + response (all turns). Normalisation: NFC, casefold, punctuation and symbols
removed, whitespace collapsed, so "భారత రాజధాని ఏది?" and "భారత రాజధాని ఏది ?" are the same. Near
duplicates: MinHash (`datasketch`) over character 5-grams of that text (Telugu words are long and
agglutinative, so character shingles see "రాజధాని" and "రాజధానిలో" as close), LSH at `threshold`
Jaccard, each candidate confirmed by its estimated Jaccard before it counts.

Which copy is kept (stated rule): records are visited best first and a record is dropped when it
duplicates one already kept. Best = (1) the source listed earliest in `prefer_sources` (e.g.
human-written Telugu before translated before synthetic), (2) the longer assistant text, (3) more
turns, (4) the smaller id. The dropped copy's line in rejected.jsonl names the kept id (`duplicate_of`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import unicodedata
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from telugu_jax.data.records import Conversation
from telugu_jax.data.stage import Stage, cached, hash_files


@dataclasses.dataclass(frozen=True)
class DedupeConfig:
  threshold: float = 0.8          # Jaccard of character 5-gram sets
  num_perm: int = 128
  shingle: int = 5
  near: bool = True               # False: exact only
  prefer_sources: tuple[str, ...] = ()

  @classmethod
  def from_dict(cls, d: Any) -> DedupeConfig:
    d = dict(d.items()) if hasattr(d, "items") else dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown dedupe settings {sorted(unknown)}")
    if "prefer_sources" in d:
      d["prefer_sources"] = tuple(d["prefer_sources"])
    return cls(**d)


@functools.cache
def _punct() -> re.Pattern:
  """A character class of every punctuation/symbol code point in the BMP (built once, on first use)."""
  chars = "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c))[0] in "PS")
  return re.compile("[" + re.escape(chars) + "]+")


def normalise(text: str) -> str:
  text = _punct().sub(" ", unicodedata.normalize("NFC", text).casefold())
  return " ".join(text.split())


def dedupe_text(conv: Conversation) -> str:
  return normalise("\n".join(t.content for t in conv.turns))


def shingles(text: str, k: int) -> np.ndarray:
  """32-bit hashes of the character k-grams: [n] (a rolling polynomial hash in numpy; hashing each k-gram
  string in Python is ~10x slower and this is the stage's hot loop). Repeats are left in: a minimum
  does not change when a value appears twice."""
  cps = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.uint64)
  if len(cps) < k:
    return np.array([zlib.crc32(text.encode())], np.uint64)
  h = np.zeros(len(cps) - k + 1, np.uint64)
  for j in range(k):
    h = (h * np.uint64(1_000_003) + cps[j:len(cps) - k + 1 + j]) & np.uint64(0xFFFFFFFF)
  return h


def _identity(x):
  return x


def minhashes(texts: Sequence[str], cfg: DedupeConfig) -> list:
  """datasketch MinHashes of the texts' k-gram hashes. Each text's hashes go in as one numpy array (the
  per-item hash is the identity), so datasketch permutes them in one vectorised step instead of a
  Python call per k-gram; test_dedupe checks this equals feeding the values one by one."""
  from datasketch import MinHash

  return list(MinHash.generator(([shingles(t, cfg.shingle)] for t in texts), num_perm=cfg.num_perm,
                                hashfunc=_identity))


def _rank(conv: Conversation, prefer: Sequence[str]) -> tuple:
  src = prefer.index(conv.source) if conv.source in prefer else len(prefer)
  answer = sum(len(t.content) for t in conv.turns if t.role == "assistant")
  return (src, -answer, -len(conv.turns), conv.id)


def dedupe_into(stage: Stage, paths: Sequence[str], cfg: DedupeConfig = DedupeConfig()) -> None:
  records: list[Conversation] = []
  for conv in stage.read(paths):
    stage.count_in()
    records.append(conv)
  records.sort(key=lambda c: _rank(c, cfg.prefer_sources))

  exact: dict[str, str] = {}
  survivors: list[tuple[Conversation, str]] = []
  for conv in records:
    text = dedupe_text(conv)
    digest = hashlib.sha1(text.encode()).hexdigest()
    if digest in exact:
      stage.reject("duplicate_exact", record=conv, duplicate_of=exact[digest], detail="same text after normalisation")
    else:
      exact[digest] = conv.id
      survivors.append((conv, text))
  if not cfg.near:
    for conv, _ in survivors:
      stage.keep(conv)
    return

  from datasketch import MinHashLSH

  lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
  kept: dict[str, Any] = {}
  batch = 4096
  near = 0
  for start in range(0, len(survivors), batch):
    chunk = survivors[start:start + batch]
    for (conv, _), mh in zip(chunk, minhashes([t for _, t in chunk], cfg), strict=True):
      best = None
      for cand in lsh.query(mh):
        j = mh.jaccard(kept[cand])
        if j >= cfg.threshold and (best is None or j > best[1]):
          best = (cand, j)
      if best is not None:
        near += 1
        stage.reject("duplicate_near", record=conv, duplicate_of=best[0], detail=f"estimated Jaccard {best[1]:.2f}")
      else:
        lsh.insert(conv.id, mh)
        kept[conv.id] = mh
        stage.keep(conv)
  stage.stats["near_duplicates"] = near


def run_dedupe(paths: Sequence[str], out_dir: str, cfg: DedupeConfig = DedupeConfig(), *,
               progress: bool = True, force: bool = False) -> dict:
  ihash = hash_files(paths, {"stage": "dedupe", **dataclasses.asdict(cfg)})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("dedupe", out_dir, input_hash=ihash, progress=progress, inputs=paths) as stage:
    dedupe_into(stage, paths, cfg)
  return stage.final
