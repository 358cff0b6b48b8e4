"""The one record type every data stage reads and writes: a `Conversation` (`telugu_jax.conversation`), stored
as JSONL.

A line is `{"id": str, "source": str, "turns": [{"role": "user"|"assistant", "content": str}, ...],
"meta": {...}}`. Reading a malformed line raises `RecordError` naming file:line and what is wrong;
stages that must not stop half-way use `iter_jsonl(..., on_error=...)` to collect those instead.

Text is checked here, where it enters: a line that is not UTF-8, or a string holding a lone surrogate (valid
JSON: "a\\ud800b") is a `RecordError` with reason `invalid_unicode`, so it becomes a rejected record, never
a crash when a later stage writes it or a tokenizer reads it.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator

from telugu_jax.conversation import ROLES, Conversation, RecordError, Turn, check_text, decode_line, unicode_problem

__all__ = ["ROLES", "Conversation", "RecordError", "Turn", "check_text", "decode_line", "iter_jsonl", "read_jsonl",
           "unicode_problem", "write_jsonl"]


def _open(path: str | os.PathLike, mode: str = "rt"):
  path = os.fspath(path)
  enc = {} if "b" in mode else {"encoding": "utf-8"}
  if path.endswith(".gz"):
    return gzip.open(path, mode, **enc)
  return open(path, mode, **enc)


def iter_jsonl(path: str | os.PathLike,
               on_error: Callable[[RecordError, str], None] | None = None) -> Iterator[Conversation]:
  """Yield conversations from a JSONL file. A bad line raises `RecordError` (file:line), or, with
  `on_error`, is passed to it with the raw line and skipped by the caller's choice, never silently."""
  with _open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      line = decode_line(raw)
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
