"""Chat JSONL ({"messages": [{"role", "content"}]}, the OpenAI/HF chat layout) and ShareGPT
({"conversations": [{"from", "value"}]}).

A system message is folded into the first user turn (`system="fold"`, default: the model has no system
slot in its template) or kept in `meta["system"]` (`system="keep"`). Consecutive messages of one role
are joined with a blank line, counted in `meta["merged_turns"]`. A conversation that starts with the
assistant or ends with the user is rejected (`bad_turns`): there is no honest way to fix it.
"""

from __future__ import annotations

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
  if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
    raise RecordError("expected an object with a 'messages' list", where)
  msgs = []
  for i, m in enumerate(row["messages"]):
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise RecordError(f"message {i} must be an object with 'role' and 'content'", where)
    if m["role"] not in CHAT_ROLES:
      raise RecordError(f"message {i} has role {m['role']!r}; expected one of {sorted(CHAT_ROLES)}", where,
                        reason="bad_turns")
    msgs.append((CHAT_ROLES[m["role"]], _content(m["content"], where, i)))
  return _to_conversation(msgs, where, id, source, system_mode)


def convert_sharegpt(row, where: str, id: str, source: str, system_mode: str = "fold") -> Conversation:
  if not isinstance(row, dict) or not isinstance(row.get("conversations"), list):
    raise RecordError("expected an object with a 'conversations' list", where)
  msgs = []
  for i, m in enumerate(row["conversations"]):
    if not isinstance(m, dict) or "from" not in m or "value" not in m:
      raise RecordError(f"conversations[{i}] must be an object with 'from' and 'value'", where)
    role = SHAREGPT_ROLES.get(str(m["from"]).lower())
    if role is None:
      raise RecordError(f"conversations[{i}] is from {m['from']!r}; expected one of {sorted(SHAREGPT_ROLES)}",
                        where, reason="bad_turns")
    msgs.append((role, _content(m["value"], where, i)))
  return _to_conversation(msgs, where, id, source, system_mode)
