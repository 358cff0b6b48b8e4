"""The `mix` stage: tag instruction types, mix sources by weight with per-type caps, split by hash,
and write a data card.

    python -m telugu_jax.data mix --in a/records.jsonl b/records.jsonl --out runs/data/mix

Types (rules on the first user turn, Telugu and English cues, first match wins): translation,
summarisation, conversation (more than one exchange), creative, question, command, other.

Mixing: a source's weight is the fraction of its records to keep (1.0 = all, default `default_weight`);
`total`, when set, scales every source's quota down so the output has at most that many records. A type
cap is the largest fraction of the output one type may take. Within a source, records are taken in a
stable hash order (sha1 of the id), so a rerun picks the same ones and adding a record does not
reshuffle the rest. What is left out is rejected as `over_source_quota` or `over_type_cap`.

Split: train/val/test by sha1 of `meta["group"]` (an OASST tree; several paths of one tree must not
straddle splits) or else the id; stable across reruns and independent of the other records.
Writes records.jsonl (all kept, `meta.type` and `meta.split` set), train/val/test.jsonl and data_card.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from telugu_jax.data.clean import TRANSLATION_TASK
from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.data.stage import Stage, cached, hash_files, load_summary

TYPES = ("question", "command", "creative", "summarisation", "translation", "conversation", "other")
RULES = (  # (type, pattern on the first user turn); order matters
    ("translation", TRANSLATION_TASK.pattern),
    ("summarisation", r"సారాంశ|సంక్షిప్త|క్లుప్తంగా|summar|tl;?dr|in brief"),
    ("creative", r"కవిత|కథ(?:ను|ని|)\s|కథ$|పద్యం|పాట|గేయం|వ్యాసం|నినాదం|\b(?:poem|story|song|essay|haiku|lyrics|slogan)\b"
                 r"|write (?:a|an) "),
    ("question", r"[?？]\s*$|^(?:what|who|when|where|why|how|which|is|are|do|does|can)\b|ఏమిటి|ఎవరు|ఎక్కడ|ఎప్పుడు"
                 r"|ఎందుకు|ఎలా|ఎన్ని|ఏది|ఎంత|ఏమి|ఏ\s"),
    ("command", r"(?:ండి|ుము|చెప్పు|రాయి|ఇవ్వు|చేయి|వివరించు)[.!]?\s*$"
                r"|^(?:list|give|explain|describe|write|make|create|name|tell|find|classify|generate|rewrite|convert|edit|suggest|identify|provide)\b|చెప్పండి|ఇవ్వండి|వివరించండి|రాయండి"
                r"|రాయి|జాబితా|వర్గీకరించ"),
)
_RULES = tuple((t, re.compile(p, re.I | re.M)) for t, p in RULES)


def tag(conv: Conversation) -> str:
  """The instruction type of a conversation, by the rules above."""
  user = conv.turns[0].content.strip()
  for t, pattern in _RULES[:2]:
    if pattern.search(user):
      return t
  if len(conv.turns) > 2:
    return "conversation"
  for t, pattern in _RULES[2:]:
    if pattern.search(user):
      return t
  return "other"


def unit_hash(key: str, salt: str = "") -> float:
  """A stable number in [0, 1) from a string."""
  return int.from_bytes(hashlib.sha1((salt + key).encode()).digest()[:8], "big") / 2**64


@dataclasses.dataclass(frozen=True)
class MixConfig:
  weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
  default_weight: float = 1.0
  total: int | None = None
  type_caps: Mapping[str, float] = dataclasses.field(default_factory=dict)  # type -> max fraction of output
  split: tuple[float, float, float] = (0.9, 0.05, 0.05)
  salt: str = "telugu-jax"

  @classmethod
  def from_dict(cls, d: Any) -> MixConfig:
    d = {k: (dict(v) if hasattr(v, "items") else v) for k, v in (d.items() if hasattr(d, "items") else d)}
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown mix settings {sorted(unknown)}")
    if "split" in d:
      d["split"] = tuple(d["split"])
    if d.get("total") in (0, -1):
      d["total"] = None
    return cls(**d)

  def __post_init__(self):
    if abs(sum(self.split) - 1) > 1e-6 or len(self.split) != 3:
      raise ValueError(f"split must be three fractions (train, val, test) adding to 1, got {self.split}")
    bad = [t for t in self.type_caps if t not in TYPES]
    if bad:
      raise ValueError(f"type_caps names unknown types {bad}; types are {TYPES}")
    for s, w in self.weights.items():
      if not 0 <= w <= 1:
        raise ValueError(f"weight of source {s!r} is {w}; a weight is the fraction kept, in [0, 1]")


def split_of(conv: Conversation, cfg: MixConfig) -> str:
  u = unit_hash(str(conv.meta.get("group", conv.id)), cfg.salt + "/split")
  train, val, _ = cfg.split
  return "train" if u < train else ("val" if u < train + val else "test")


def mix_into(stage: Stage, paths: Sequence[str], cfg: MixConfig) -> list[Conversation]:
  by_source: dict[str, list[Conversation]] = defaultdict(list)
  for conv in stage.read(paths):
    stage.count_in()
    conv = dataclasses.replace(conv, meta={**conv.meta, "type": tag(conv)})
    by_source[conv.source].append(conv)
  quota = {s: round(cfg.weights.get(s, cfg.default_weight) * len(rs)) for s, rs in by_source.items()}
  target = sum(quota.values())
  if cfg.total is not None and target > cfg.total:
    scale = cfg.total / target
    quota = {s: math.floor(q * scale) for s, q in quota.items()}
    target = sum(quota.values())
  caps = {t: math.floor(f * target) for t, f in cfg.type_caps.items()}
  # Interleave sources in hash order so a type cap does not fill up with the first source's records.
  ordered = sorted((unit_hash(c.id, cfg.salt), c) for rs in by_source.values() for c in rs)
  taken, types = Counter(), Counter()
  kept: list[Conversation] = []
  for _, conv in ordered:
    t = conv.meta["type"]
    if taken[conv.source] >= quota[conv.source]:
      stage.reject("over_source_quota", record=conv, detail=f"source {conv.source!r} quota {quota[conv.source]}")
    elif t in caps and types[t] >= caps[t]:
      stage.reject("over_type_cap", record=conv, detail=f"type {t!r} cap {caps[t]} ({cfg.type_caps[t]:.0%})")
    else:
      taken[conv.source] += 1
      types[t] += 1
      conv = dataclasses.replace(conv, meta={**conv.meta, "split": split_of(conv, cfg)})
      kept.append(conv)
      stage.keep(conv)
  stage.stats["quota"] = quota
  return kept


def _histogram(values: Sequence[int], edges=(0, 50, 100, 200, 400, 800, 1600, 3200)) -> list[tuple[str, int]]:
  bins = Counter()
  for v in values:
    i = max(k for k, e in enumerate(edges) if v >= e)
    bins[i] += 1
  labels = [f"{edges[i]}–{edges[i + 1] - 1}" if i + 1 < len(edges) else f"{edges[i]}+" for i in range(len(edges))]
  return [(labels[i], bins[i]) for i in range(len(edges))]


def _source_row(s: dict) -> tuple:
  """One row of the card's "Sources read" table from a read stage's summary."""
  files = "; ".join(f"{os.path.basename(p)} ({f})" for p, f in s.get("formats", {}).items())
  used, filters = [], []
  for c in s.get("columns", {}).values():
    cols = ", ".join(f"{k}←{v}" if k != v else k for k, v in {**c.get("columns", {}), **c.get("fields", {})}.items())
    lang = str(c.get("lang")) + (" + en→te/te→en tasks" if c.get("translation_tasks") else "")
    if cols or c.get("lang") not in (None, "none"):
      used.append(f"{lang}: {cols}" if cols else lang)
    filters += [f"{k}={'|'.join(v)}" for k, v in c.get("where", {}).items()]
  filtered = f"{sum(s['filtered'].values()):,}" if "filtered" in s else "—"
  return (os.path.basename(s.get("out_dir", "")), files or "—", "; ".join(dict.fromkeys(used)) or "as named",
          ", ".join(dict.fromkeys(filters)) or "—", f"{s['in']:,}", f"{s['out']:,}", filtered,
          f"{sum(s['rejected'].values()):,}")


def data_card(kept: Sequence[Conversation], summaries: Sequence[dict] = (), title: str = "Telugu SFT data") -> str:
  """A Markdown data card: counts per source, type and split, a length histogram, and drop reasons."""
  def table(header: tuple[str, ...], rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]

  n = len(kept)
  lines = [f"# {title}", "", f"{n:,} conversations.", ""]
  for name, key in (("source", lambda c: c.source), ("type", lambda c: c.meta.get("type", "?")),
                    ("split", lambda c: c.meta.get("split", "?"))):
    counts = Counter(key(c) for c in kept)
    lines += [f"## Per {name}", ""]
    lines += table((name, "records", "share"), [(k, f"{v:,}", f"{v / max(n, 1):.1%}") for k, v in counts.most_common()])
  lines += ["## Assistant length (characters)", ""]
  hist = _histogram([sum(len(t.content) for t in c.turns if t.role == "assistant") for c in kept])
  peak = max((v for _, v in hist), default=0) or 1
  lines += table(("characters", "records", ""), [(label, v, "█" * round(20 * v / peak)) for label, v in hist])
  turns = Counter(len(c.turns) // 2 for c in kept)
  lines += ["## Exchanges per conversation", ""]
  lines += table(("exchanges", "records"), sorted(turns.items()))
  reads = [s for s in summaries if s.get("stage") == "read"]
  if reads:
    lines += ["## Sources read", ""]
    lines += table(("source", "files (format)", "columns used", "filters", "in", "out", "filtered", "rejected"),
                   [_source_row(s) for s in reads])
  if summaries:
    lines += ["## Stages and drop reasons", ""]
    rows = []
    for s in summaries:
      reasons = ", ".join(f"{r} {k:,}" for r, k in sorted(s["rejected"].items(), key=lambda kv: -kv[1])) or "—"
      rows.append((s["stage"], os.path.basename(s.get("out_dir", "")), f"{s['in']:,}", f"{s['out']:,}", reasons))
    lines += table(("stage", "dir", "in", "out", "dropped (reason count)"), rows)
  return "\n".join(lines)


def run_mix(paths: Sequence[str], out_dir: str, cfg: MixConfig = MixConfig(), *, upstream: Sequence[str] = (),
            progress: bool = True, force: bool = False) -> dict:
  """Mix `paths` into out_dir; `upstream` are earlier stage directories whose summaries go in the card."""
  ihash = hash_files(paths, {"stage": "mix", **dataclasses.asdict(cfg)})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("mix", out_dir, input_hash=ihash, progress=progress, inputs=paths) as stage:
    kept = mix_into(stage, paths, cfg)
    for split in ("train", "val", "test"):
      stage.stats[split] = write_jsonl(os.path.join(out_dir, f"{split}.jsonl"),
                                       (c for c in kept if c.meta["split"] == split))
  summaries = [s for d in upstream if (s := load_summary(d))] + [stage.final]
  with open(os.path.join(out_dir, "data_card.md"), "w", encoding="utf-8") as f:
    f.write(data_card(kept, summaries) + "\n")
  return stage.final
