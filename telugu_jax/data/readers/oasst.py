"""OpenAssistant message trees -> multi-turn conversations.

Input: flat message rows (oasst1/oasst2 on the hub: `message_id`, `parent_id`, `role` prompter|assistant,
`text`, `lang`, `rank`, `deleted`, `review_result`, `message_tree_id`, ...) or the nested export
(`{"message_tree_id", "prompt": {..., "replies": [...]}}`); both can be mixed.

The accounting unit is the *message*: each one ends in some conversation or in `rejected.jsonl` with why:
  deleted / review_failed / lang / empty_turn / forged_role_marker  the message itself is unusable
  under_dropped        an ancestor was dropped, so the message has no context (detail names it)
  orphan               its parent is not in the input (e.g. a tree whose root had another `lang`)
  bad_turns            a root that is not a prompter, or a reply by the same role as its parent
  no_reply             a prompter message at the end of a path with no usable assistant answer
  not_best_path        (best-path mode) a sibling ranked better was chosen
Best path (default): from the root, always the best-ranked surviving reply (rank 0 first; unranked
after ranked, then in input order). `all_paths=True` yields every root-to-leaf path instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from telugu_jax.chat_format import DEFAULT_TEMPLATE
from telugu_jax.data.readers.files import BadRow
from telugu_jax.data.records import Conversation, RecordError, Turn

ROLE = {"prompter": "user", "assistant": "assistant"}


def _flatten(rows: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
  """Nested export trees -> flat messages with parent ids; flat rows pass through."""
  for where, row in rows:
    if isinstance(row, dict) and isinstance(row.get("prompt"), dict):
      tree_id, state = row.get("message_tree_id"), row.get("tree_state")
      stack = [(row["prompt"], None, f"{where}/prompt")]
      while stack:
        msg, parent, w = stack.pop()
        if not isinstance(msg, dict):
          yield w, BadRow("a message in the tree is not an object", repr(msg)[:200])
          continue
        flat = {k: v for k, v in msg.items() if k != "replies"}
        flat.setdefault("parent_id", parent)
        flat.setdefault("message_tree_id", tree_id)
        flat.setdefault("tree_state", state)
        yield w, flat
        replies = msg.get("replies") or []
        for i in range(len(replies) - 1, -1, -1):  # stack: reversed, so input order is kept
          stack.append((replies[i], msg.get("message_id"), f"{w}/replies[{i}]"))
    else:
      yield where, row


def _rank(msg: dict, order: int) -> tuple:
  r = msg.get("rank")
  if isinstance(r, float) and math.isnan(r):
    r = None
  return (r is None, r if r is not None else 0, order)


def read_oasst(rows: Iterable[tuple[str, Any]], stage, source: str, *, all_paths: bool = False,
               langs: tuple[str, ...] = (), template=DEFAULT_TEMPLATE) -> None:
  """Build conversations from message rows and write them (and every unused message) to `stage`."""
  msgs: dict[str, dict] = {}
  where: dict[str, str] = {}
  order: dict[str, int] = {}
  for w, m in _flatten(rows):
    stage.count_in()
    if isinstance(m, BadRow):
      stage.reject("malformed", raw=m.raw, where=w, detail=m.message)
      continue
    problem = (None if isinstance(m, dict) else "expected a JSON object")
    if problem is None:
      missing = [k for k in ("message_id", "text", "role") if not isinstance(m.get(k), str)]
      problem = f"missing or non-string field(s) {missing}" if missing else None
    if problem is None and m["role"] not in ROLE:
      problem = f"role {m['role']!r} is not prompter or assistant"
    if problem is None and m["message_id"] in msgs:
      problem = f"message_id {m['message_id']} appears twice"
    if problem:
      stage.reject("malformed", raw=m, where=w, detail=problem)
      continue
    msgs[m["message_id"]] = m
    where[m["message_id"]] = w
    order[m["message_id"]] = len(order)

  children: dict[str | None, list[str]] = {}
  for mid, m in msgs.items():
    children.setdefault(m.get("parent_id"), []).append(mid)

  def own_problem(m: dict) -> tuple[str, str] | None:
    if m.get("deleted"):
      return "deleted", "deleted by OpenAssistant moderation"
    if m.get("review_result") is False:
      return "review_failed", "review_result is false"
    if langs and m.get("lang") not in langs:
      return "lang", f"lang {m.get('lang')!r} not in {list(langs)}"
    if not m["text"].strip():
      return "empty_turn", "empty text"
    if mk := template.forged_marker(m["text"]):
      return "forged_role_marker", f"a line starts with the role marker {mk!r}"
    return None

  alive: set[str] = set()
  settled: set[str] = set()

  def drop_subtree(mid: str, reason: str, detail: str, cause: str) -> None:
    stack = [mid]
    first = True
    while stack:
      cur = stack.pop()
      settled.add(cur)
      r, d = (reason, detail) if first else ("under_dropped", f"ancestor {cause} was dropped ({reason})")
      stage.reject(r, raw=msgs[cur], where=where[cur], detail=d, key=cur)
      first = False
      stack.extend(children.get(cur, ()))

  # Walk from the roots; whatever is never reached is an orphan.
  stack = [(mid, "user") for mid in reversed(children.get(None, []))]
  while stack:
    mid, expected = stack.pop()
    m = msgs[mid]
    if ROLE[m["role"]] != expected:
      drop_subtree(mid, "bad_turns", f"a {m['role']} message where a {expected} turn belongs", mid)
      continue
    if p := own_problem(m):
      drop_subtree(mid, p[0], p[1], mid)
      continue
    alive.add(mid)
    nxt = "assistant" if expected == "user" else "user"
    stack.extend((c, nxt) for c in reversed(children.get(mid, [])))
  for mid in msgs:
    if mid not in alive and mid not in settled:
      stage.reject("orphan", raw=msgs[mid], where=where[mid], key=mid,
                   detail=f"parent {msgs[mid].get('parent_id')} is not in the input (or not reachable from a root)")
      settled.add(mid)

  def kids(mid: str) -> list[str]:
    return sorted((c for c in children.get(mid, ()) if c in alive), key=lambda c: _rank(msgs[c], order[c]))

  paths: list[list[str]] = []
  for root in children.get(None, []):
    if root not in alive:
      continue
    if all_paths:
      todo = [[root]]
      while todo:
        path = todo.pop()
        ks = kids(path[-1])
        if ks:
          todo.extend(path + [k] for k in reversed(ks))
        else:
          paths.append(path)
    else:
      path = [root]
      while ks := kids(path[-1]):
        if msgs[path[-1]]["role"] == "assistant":  # prefer a follow-up question that got an answer
          ks = [k for k in ks if kids(k)] or ks
        path.append(ks[0])
      paths.append(path)

  used: set[str] = set()
  extends = {mid for mid in alive if any(msgs[c]["role"] == "prompter" and kids(c) for c in kids(mid))}
  for path in paths:
    if msgs[path[-1]]["role"] == "prompter":
      last = path.pop()
      if last not in used and last not in settled:
        stage.reject("no_reply", raw=msgs[last], where=where[last], key=last,
                     detail="a prompter message with no usable assistant reply")
        settled.add(last)
      if not path or (all_paths and path[-1] in extends):
        continue  # nothing left, or a longer path through path[-1] carries these messages
    new = [mid for mid in path if mid not in used]
    used.update(path)
    root = msgs[path[0]]
    conv = Conversation(
        id=f"{source}/{path[-1]}", source=source,
        turns=tuple(Turn(ROLE[msgs[mid]["role"]], msgs[mid]["text"].strip()) for mid in path),
        meta={k: v for k, v in {
            "tree_id": root.get("message_tree_id"), "group": root.get("message_tree_id") or path[0],
            "lang": root.get("lang"), "path": path, "where": where[path[0]],
            "synthetic": any(bool(msgs[mid].get("synthetic")) for mid in path) or None,
            "tree_state": root.get("tree_state")}.items() if v is not None})
    try:
      stage.keep(conv, consumed=len(new))
    except RecordError as e:  # text that cannot be encoded: every message it would have used is rejected
      for mid in new:
        stage.reject(e.reason, raw=msgs[mid], where=where[mid], key=mid, detail=str(e))
  for mid in alive:
    if mid not in used and mid not in settled:
      stage.reject("not_best_path", raw=msgs[mid], where=where[mid], key=mid,
                   detail="a better-ranked sibling (or its branch) was chosen")
