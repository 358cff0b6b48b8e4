"""The conversation types every layer shares: `Turn`, `Conversation` (and `RecordError` for a record that
cannot be read, and `check_text`, the one check of text where it enters). They sit below both the chat format
and the data stages, which import them from here;
JSONL reading and writing live in `telugu_jax.data.records`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from telugu_jax.errors import UserError

ROLES = ("user", "assistant")


class RecordError(UserError, ValueError):
  """A record that cannot be read; `where` is "file:line"."""

  def __init__(self, message: str, where: str = "", reason: str = "malformed"):
    super().__init__(f"{where}: {message}" if where else message)
    self.where, self.reason = where, reason


def unicode_problem(text: str) -> str | None:
  """None when `text` can be written as UTF-8; else what is wrong with it and where (a lone surrogate from a
  JSON escape, or a byte that was not UTF-8, kept as U+DC80..U+DCFF by the `surrogateescape` decoder)."""
  try:
    text.encode("utf-8")
    return None
  except UnicodeEncodeError as e:
    ch = text[e.start]
    if 0xDC80 <= ord(ch) <= 0xDCFF:
      return f"byte 0x{ord(ch) - 0xDC00:02x} at character {e.start} is not UTF-8"
    return f"lone surrogate U+{ord(ch):04X} at character {e.start}"


def check_text(value: Any, what: str, where: str = "") -> None:
  """Raise `RecordError(reason="invalid_unicode")` when a string anywhere in `value` cannot be encoded."""
  if isinstance(value, str):
    if (why := unicode_problem(value)) is not None:
      raise RecordError(f"{what}: invalid Unicode ({why})", where, reason="invalid_unicode")
  elif isinstance(value, dict):
    for k, v in value.items():
      check_text(k, what, where)
      check_text(v, f"{what}.{k}", where)
  elif isinstance(value, list | tuple):
    for v in value:
      check_text(v, what, where)


def decode_line(raw: bytes) -> str:
  """A line of a UTF-8 file; bytes that are not UTF-8 are kept (as U+DC80..U+DCFF) for `check_text` to name."""
  return raw.decode("utf-8", errors="surrogateescape")


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
      check_text(t["content"], f"turn {i} content", where)
      out.append(Turn(t["role"], t["content"]))
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
      raise RecordError("'meta' must be an object", where)
    check_text([d["id"], d.get("source", "")], "id/source", where)
    check_text(meta, "meta", where)
    return cls(id=str(d["id"]), turns=tuple(out), source=str(d.get("source", "")), meta=meta)

  @classmethod
  def single(cls, id: str, user: str, assistant: str, source: str = "", **meta) -> Conversation:
    return cls(id=id, turns=(Turn("user", user), Turn("assistant", assistant)), source=source, meta=meta)
