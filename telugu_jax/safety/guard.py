"""The safety filter on the path of a conversation (the server and the chat CLI): the prompt before generation,
the answer before the user sees it.

Prompt: the last user message (and a folded system message) is checked as `role="user"`; a blocked one is
answered with the filter's refusal (finish reason `content_filter`) and an identity question ("who are
you?") with its honest answer, both without running the model.

Answer, not streamed: the whole answer is checked as `role="assistant"`; a blocked one is replaced by the
refusal. Answer, streamed: text is sent a sentence at a time, each sentence checked (with the sentence
before it, so a phrase across the boundary is seen) before it goes out; a blocked sentence is never sent,
the refusal follows what was sent, and decoding stops. Checking the whole text at every token would cost
O(length^2) per stream (the filter takes ~5 ms on 500 characters, ~30 ms on 1,500), and sending tokens before
their sentence is checked would show the start of what is then blocked. A sentence ends at `.`, `?`, `!`,
`।` or a line break; a run of `FLUSH_CHARS` without one is checked and sent as it is.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

SENTENCE_END = re.compile(r"[.?!।\n]+[\"')\]]*\s*")
FLUSH_CHARS = 240
OVERLAP_CHARS = 160  # how much already-sent text is checked again with each new sentence


class Filter(Protocol):  # telugu_jax.safety.SafetyFilter
  def check(self, text: str, *, role: str = "user"): ...


@dataclasses.dataclass(frozen=True)
class Verdict:
  response: str           # what to answer instead
  finish_reason: str      # "content_filter" (refused) or "stop" (the identity answer)
  note: dict              # for the response's telugu_jax notes: category and rule, never the text


def check_prompt(flt: Filter, last_user: str, system: str = "") -> Verdict | None:
  """A refusal or identity answer for the prompt, or None to go on and generate."""
  for text in (last_user, system):
    if not text:
      continue
    d = flt.check(text, role="user")
    if d.blocked:
      return Verdict(d.response, "content_filter", {"blocked": True, "category": d.category, "rule": d.rule})
    if d.response is not None and text is last_user:
      return Verdict(d.response, "stop", {"blocked": False, "category": d.category, "rule": d.rule})
  return None


def check_answer(flt: Filter, answer: str) -> Verdict | None:
  d = flt.check(answer, role="assistant")
  if d.blocked:
    return Verdict(d.response, "content_filter", {"blocked": True, "category": d.category, "rule": d.rule})
  return None


class StreamGuard:
  """Buffers a streamed answer into sentences and checks each before it is released."""

  def __init__(self, flt: Filter):
    self.flt, self.pending, self.sent, self.verdict = flt, "", "", None

  def feed(self, text: str, *, final: bool = False) -> str:
    """Add streamed text; returns what may be sent now ("" when nothing, or once blocked: see `verdict`)."""
    if self.verdict is not None:
      return ""
    self.pending += text
    if final:
      cut = len(self.pending)
    else:
      ends = [m.end() for m in SENTENCE_END.finditer(self.pending) if m.end() < len(self.pending) or
              self.pending[-1].isspace()]
      cut = ends[-1] if ends else (len(self.pending) if len(self.pending) >= FLUSH_CHARS else 0)
    if cut == 0:
      return ""
    release, self.pending = self.pending[:cut], self.pending[cut:]
    self.verdict = check_answer(self.flt, self.sent[-OVERLAP_CHARS:] + release)
    if self.verdict is not None:
      return ""
    self.sent += release
    return release
