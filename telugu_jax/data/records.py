"""The one record type every data stage reads and writes: a `Conversation`, stored as JSONL.

A line is `{"id": str, "source": str, "turns": [{"role": "user"|"assistant", "content": str}, ...],
"meta": {...}}`. Reading a malformed line raises `RecordError` naming file:line and what is wrong;
stages that must not stop half-way use `iter_jsonl(..., on_error=...)` to collect those instead.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ROLES = ("user", "assistant")


class RecordError(ValueError):
  """A record that cannot be read; `where` is "file:line"."""

  def __init__(self, message: str, where: str = "", reason: str = "malformed"):
    super().__init__(f"{where}: {message}" if where else message)
    self.where, self.reason = where, reason


@dataclasses.dataclass(frozen=True)
class Turn:
  role: str
  content: str

  def to_dict(self) -> dict:
    return {"role": self.role, "content": self.content}


@dataclasses.dataclass(frozen=True)
class Conversation:
  id: str
  turns: tuple[Turn, ...]
  source: str = ""
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return {"id": self.id, "source": self.source, "turns": [t.to_dict() for t in self.turns],
            "meta": self.meta}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False)

  @classmethod
  def from_dict(cls, d: Any, where: str = "") -> Conversation:
    if not isinstance(d, dict):
      raise RecordError(f"expected a JSON object, got {type(d).__name__}", where)
    missing = [k for k in ("id", "turns") if k not in d]
    if missing:
      raise RecordError(f"missing field(s) {missing}", where)
    turns = d["turns"]
    if not isinstance(turns, list) or not turns:
      raise RecordError("'turns' must be a non-empty list", where)
    out = []
    for i, t in enumerate(turns):
      if not isinstance(t, dict) or "role" not in t or "content" not in t:
        raise RecordError(f"turn {i} must be an object with 'role' and 'content'", where)
      if t["role"] not in ROLES:
        raise RecordError(f"turn {i} has role {t['role']!r}; expected one of {ROLES}", where)
      if not isinstance(t["content"], str):
        raise RecordError(f"turn {i} content must be a string", where)
      out.append(Turn(t["role"], t["content"]))
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
      raise RecordError("'meta' must be an object", where)
    return cls(id=str(d["id"]), turns=tuple(out), source=str(d.get("source", "")), meta=meta)

  @classmethod
  def single(cls, id: str, user: str, assistant: str, source: str = "", **meta) -> Conversation:
    return cls(id=id, turns=(Turn("user", user), Turn("assistant", assistant)), source=source, meta=meta)


def _open(path: str | os.PathLike, mode: str = "rt"):
  path = os.fspath(path)
  if path.endswith(".gz"):
    return gzip.open(path, mode, encoding="utf-8")
  return open(path, mode, encoding="utf-8")


def iter_jsonl(path: str | os.PathLike,
               on_error: Callable[[RecordError, str], None] | None = None) -> Iterator[Conversation]:
  """Yield conversations from a JSONL file. A bad line raises `RecordError` (file:line), or, with
  `on_error`, is passed to it with the raw line and skipped by the caller's choice, never silently."""
  with _open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{os.fspath(path)}:{lineno}"
      try:
        try:
          d = json.loads(line)
        except json.JSONDecodeError as e:
          raise RecordError(f"invalid JSON ({e.msg} at column {e.colno})", where) from None
        yield Conversation.from_dict(d, where)
      except RecordError as e:
        if on_error is None:
          raise
        on_error(e, line)


def read_jsonl(path: str | os.PathLike) -> list[Conversation]:
  return list(iter_jsonl(path))


def write_jsonl(path: str | os.PathLike, records: Iterable[Conversation]) -> int:
  """Write atomically (temp file + rename), so a killed stage never leaves a half-written file."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  n = 0
  with _open(tmp, "wt") as f:
    for r in records:
      f.write(r.to_json() + "\n")
      n += 1
  os.replace(tmp, path)
  return n
