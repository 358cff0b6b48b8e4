"""Helpers the schema readers share: typed field access and the checks every new record gets."""

from __future__ import annotations

from typing import Any

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
from telugu_jax.data.records import Conversation, RecordError, Turn


def field(row: Any, key: str, where: str, *, required: bool = True, default: str = "") -> str:
  """`row[key]` as a string; a missing or non-string field is a `RecordError` naming the field."""
  if not isinstance(row, dict):
    raise RecordError(f"expected a JSON object, got {type(row).__name__}", where)
  if key not in row or row[key] is None:
    if required:
      raise RecordError(f"missing field {key!r} (has {sorted(row)[:8]})", where)
    return default
  value = row[key]
  if not isinstance(value, str):
    raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}", where)
  return value


def make(id: str, source: str, turns: list[tuple[str, str]], where: str, *,
         chat_template: ChatTemplate = DEFAULT_TEMPLATE, **meta) -> Conversation:
  """A checked conversation: alternating user/assistant, ends with assistant, no empty turn, no forged
  role marker. Each failure is a `RecordError` with its own reason."""
  if not turns:
    raise RecordError("no turns", where, reason="empty_turn")
  for i, (role, content) in enumerate(turns):
    expected = "user" if i % 2 == 0 else "assistant"
    if role != expected:
      raise RecordError(f"turn {i} is {role!r}, expected {expected!r} (turns alternate, user first)", where,
                        reason="bad_turns")
    if not content.strip():
      raise RecordError(f"turn {i} ({role}) is empty", where, reason="empty_turn")
    if m := chat_template.forged_marker(content):
      raise RecordError(f"turn {i} ({role}) has a line starting with the role marker {m!r}", where,
                        reason="forged_role_marker")
  if turns[-1][0] != "assistant":
    raise RecordError("the last turn is a user turn with no answer", where, reason="bad_turns")
  meta = {k: v for k, v in meta.items() if v not in (None, "")}
  if where:
    meta["where"] = where
  return Conversation(id=id, turns=tuple(Turn(r, c) for r, c in turns), source=source, meta=meta)
