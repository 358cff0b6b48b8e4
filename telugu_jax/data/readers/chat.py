"""Chat JSONL ({"messages": [{"role", "content"}]}, the OpenAI/HF chat layout), ShareGPT
({"conversations": [{"from", "value"}]}), and IndicAlign-style pair lists ({"interactions": [[user,
assistant], ...]}, 1-4 exchanges, with `id` and `num_turns`).

Some exports (Parquet or CSV made with pandas) store the list as a string: it is parsed as JSON, or as a
Python literal (pandas writes `[{'role': 'user', ...}]`); a string that is neither is `malformed`.

A system message is folded into the first user turn (`system="fold"`, default: the model has no system
slot in its template) or kept in `meta["system"]` (`system="keep"`). Consecutive messages of one role
are joined with a blank line, counted in `meta["merged_turns"]`. A conversation that starts with the
assistant or ends with the user is rejected (`bad_turns`): there is no honest way to fix it.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from telugu_jax.data.readers.common import make
from telugu_jax.data.records import Conversation, RecordError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
CHAT_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _content(value: Any, where: str, i: int) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, list):  # OpenAI content parts
    texts = []
    for part in value:
      if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
        raise RecordError(f"message {i} has a non-text content part; only text is supported", where,
                          reason="non_text")
      texts.append(part["text"])
    return "\n".join(texts)
  raise RecordError(f"message {i} content must be a string, got {type(value).__name__}", where)


def _listed(row: Any, key: str, where: str, what: str) -> list:
  """row[key] as a list, parsing a stringified one."""
  if not isinstance(row, dict):
    raise RecordError(f"expected an object with {what}", where)
  value = row.get(key)
  if isinstance(value, str):
    try:
      value = json.loads(value)
    except json.JSONDecodeError as e:
      try:
        value = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise RecordError(f"'{key}' is a string that is neither JSON nor a Python literal ({e.msg} at column "
                          f"{e.colno})", where) from None
  if not isinstance(value, list | tuple):
    raise RecordError(f"expected an object with {what}", where)
  return list(value)


def _to_conversation(messages: list[tuple[str, str]], where: str, id: str, source: str, system_mode: str,
                     **meta) -> Conversation:
  system = [c for r, c in messages if r == "system"]
  turns: list[tuple[str, str]] = []
  merged = 0
  for role, content in messages:
    if role == "system":
      continue
    if turns and turns[-1][0] == role:
      turns[-1] = (role, turns[-1][1] + "\n\n" + content)
      merged += 1
    else:
      turns.append((role, content))
  sys_text = "\n\n".join(s.strip() for s in system if s.strip())
  if sys_text and system_mode == "fold" and turns and turns[0][0] == "user":
    turns[0] = ("user", sys_text + "\n\n" + turns[0][1])
  elif sys_text:
    meta["system"] = sys_text
  if merged:
    meta["merged_turns"] = merged
  return make(id, source, [(r, c.strip()) for r, c in turns], where, **meta)


def convert_chat(row, where: str, id: str, source: str, system_mode: str = "fold") -> Conversation:
  msgs = []
  for i, m in enumerate(_listed(row, "messages", where, "a 'messages' list")):
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise RecordError(f"message {i} must be an object with 'role' and 'content'", where)
    if m["role"] not in CHAT_ROLES:
      raise RecordError(f"message {i} has role {m['role']!r}; expected one of {sorted(CHAT_ROLES)}", where,
                        reason="bad_turns")
    msgs.append((CHAT_ROLES[m["role"]], _content(m["content"], where, i)))
  return _to_conversation(msgs, where, id, source, system_mode)


def convert_sharegpt(row, where: str, id: str, source: str, system_mode: str = "fold") -> Conversation:
  msgs = []
  for i, m in enumerate(_listed(row, "conversations", where, "a 'conversations' list")):
    if not isinstance(m, dict) or "from" not in m or "value" not in m:
      raise RecordError(f"conversations[{i}] must be an object with 'from' and 'value'", where)
    role = SHAREGPT_ROLES.get(str(m["from"]).lower())
    if role is None:
      raise RecordError(f"conversations[{i}] is from {m['from']!r}; expected one of {sorted(SHAREGPT_ROLES)}",
                        where, reason="bad_turns")
    msgs.append((role, _content(m["value"], where, i)))
  return _to_conversation(msgs, where, id, source, system_mode)


def convert_interactions(row, where: str, id: str, source: str, system_mode: str = "fold") -> Conversation:
  """IndicAlign-style: `interactions` is a list of [user, assistant] pairs."""
  pairs = _listed(row, "interactions", where, "an 'interactions' list of [user, assistant] pairs")
  if not pairs:
    raise RecordError("'interactions' is empty", where, reason="empty_turn")
  turns: list[tuple[str, str]] = []
  for i, p in enumerate(pairs):
    if not (isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)):
      raise RecordError(f"interactions[{i}] must be a [user, assistant] pair of strings, got {str(p)[:60]!r}", where)
    turns += [("user", p[0].strip()), ("assistant", p[1].strip())]
  return make(id, source, turns, where)
