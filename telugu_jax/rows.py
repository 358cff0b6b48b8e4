"""The one row tracker: per-row host state of a decode loop, for `Generator.generate` and the server.

A decode loop calls its host hook once per step with the batch's new tokens (`generate.HostHook`); the
`RowTracker` follows each row: its ids, its text, its stop strings and token limit, cancellation, and
streaming of the text that can no longer change. Each step costs the same whatever the answer's length
so far: only the new tokens are decoded (`Detokenizer`), stop strings are searched in the few characters
not yet streamed, and role markers are held back a line start at a time (`AnswerCleaner`).

Text that is final: `Detokenizer` holds back a token window that decodes to an incomplete UTF-8 sequence
(U+FFFD until its last byte arrives); the tracker holds back a suffix that could still become a stop string
(`holdback`); with a chat template, `AnswerCleaner` holds back a line start that could still become a role
marker, and trailing whitespace. So streamed pieces always join to the final text: the raw text cut at the
first stop string, or, with a template, `clean_answer` of it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from telugu_jax.chat_format import ChatTemplate, clean_answer, neutralise_markers

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes of an incomplete UTF-8 sequence


class Cancel(Protocol):  # threading.Event
  def is_set(self) -> bool: ...


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
  """`text` before the earliest stop string, and whether one was found."""
  hits = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
  return (text[:min(hits)], True) if hits else (text, False)


def holdback(text: str, stop_strings: Sequence[str]) -> int:
  """How many trailing characters of `text` may not be streamed yet: a partial stop string, or an
  incomplete UTF-8 sequence (decoded as U+FFFD until its last byte arrives)."""
  n = 0
  for s in stop_strings:
    for k in range(min(len(s) - 1, len(text)), n, -1):
      if text.endswith(s[:k]):
        n = k
        break
  stripped = text.rstrip(REPLACEMENT)
  return max(n, len(text) - len(stripped))


class Detokenizer:
  """The text of a growing list of ids, decoding a short window of recent tokens per step, not the row.

  Decoding token by token is wrong for sentencepiece and byte-level BPE alike: a leading space depends on
  the token before (a decoder drops the space of the first piece it sees), and a Telugu letter is 3 UTF-8
  bytes that byte-fallback pieces spell one at a time. So each step decodes `window + new tokens` and keeps
  what goes beyond the window's own text; when that ends in U+FFFD (bytes of an unfinished character) it
  waits for more tokens. The window restarts after every piece given out, so it stays a few tokens long.
  `text` equals `tokenizer.decode(ids)` after every step (tested for every prefix of Telugu text).
  """

  def __init__(self, tokenizer: Any):
    self.tokenizer = tokenizer
    self.ids: list[int] = []
    self.parts: list[str] = []   # the final text, piece by piece
    self.tail = ""               # text of ids[read:] as it decodes now (ends in U+FFFD while unfinished)
    self._start = 0              # the window: ids[_start:_read] decoded to `_window_text`
    self._read = 0
    self._window_text = ""

  def push(self, token: int) -> str:
    """Add one token; returns the text that became final with it ("" while it waits)."""
    self.ids.append(int(token))
    text = self.tokenizer.decode(self.ids[self._start:])
    if text.startswith(self._window_text):
      new = text[len(self._window_text):]
    else:  # a decoder that rewrites earlier text (none of ours): what the whole row adds to the final text
      full, done = self.tokenizer.decode(self.ids), "".join(self.parts)
      new = full[len(done):] if full.startswith(done) else ""
    if new and not new.endswith(REPLACEMENT):
      self._start, self._read = self._read, len(self.ids)
      self._window_text = self.tokenizer.decode(self.ids[self._start:self._read])
      self.parts.append(new)
      self.tail = ""
      return new
    self.tail = new
    return ""

  def flush(self) -> str:
    """The rest (an unfinished sequence stays U+FFFD, as a full decode writes it), as final text."""
    piece, self.tail = self.tail, ""
    if piece:
      self.parts.append(piece)
    self._start = self._read = len(self.ids)
    self._window_text = ""
    return piece

  @property
  def text(self) -> str:
    return "".join(self.parts) + self.tail


class AnswerCleaner:
  """`clean_answer`, incrementally: feed raw answer text as it becomes final, get back the cleaned text that
  no later text can change, so the pieces join to a prefix of `clean_answer(all raw text)`.

  Held back: a line start that could still become a role marker (it is neutralised once decided), trailing
  whitespace (the answer is stripped), and the answer's leading whitespace is dropped. A decided line
  passes through as it comes, so a step costs the same on the 1st line and the 100th.
  """

  def __init__(self, template: ChatTemplate):
    self.template = template
    self._markers = [m.casefold() for m in (template.user, template.assistant)]
    self._line = ""        # raw text of the current line while its start is undecided
    self._decided = False  # the current line's start is decided: its text passes through
    self._carry = ""       # last len(turn_sep) - 1 raw characters of a decided line (a separator may span feeds)
    self._space = ""       # cleaned whitespace not sent yet: it goes out once other text follows
    self._started = False  # some text was sent (the answer's leading whitespace is dropped)

  def _emit(self, out: list[str], text: str) -> None:
    body = text.rstrip()
    if not body:
      self._space += text
      return
    out.append(self._space + body if self._started else body.lstrip())
    self._started, self._space = True, text[len(body):]

  def _undecided(self) -> bool:
    head = self._line.lstrip().casefold()
    return not head or any(m.startswith(head) for m in self._markers)

  def feed(self, raw: str) -> str:
    out: list[str] = []
    sep = self.template.turn_sep
    while raw:
      if self._decided:
        joined = self._carry + raw
        j = joined.find(sep)
        if j < 0:
          self._emit(out, raw)
          self._carry = joined[len(joined) - len(sep) + 1:] if len(sep) > 1 else ""
          break
        end = j + len(sep) - len(self._carry)
        self._emit(out, raw[:end])
        raw, self._decided, self._carry = raw[end:], False, ""
        continue
      line = self._line + raw
      j = line.find(sep)
      if j >= 0:  # the line ends here: decided whatever its start
        self._emit(out, neutralise_markers(line[:j], self.template) + sep)
        self._line, raw = "", line[j + len(sep):]
        continue
      self._line, raw = line, ""
      if not self._undecided():
        self._emit(out, neutralise_markers(self._line, self.template))
        self._decided = True
        self._carry = self._line[len(self._line) - len(sep) + 1:] if len(sep) > 1 else ""
        self._line = ""
    return "".join(out)


@dataclasses.dataclass
class RowSpec:
  """What one row asks for."""

  stops: tuple[str, ...] = ()
  max_tokens: int | None = None             # None: the program's budget
  on_text: Callable[[str], None] | None = None  # streaming: each new piece of final text
  cancelled: Cancel | None = None           # set: the row ends at the next step (reason "cancelled")


class Row:
  """One row's state. After the loop: `ids` (through the token that ended it), `text` (raw, cut before the
  first stop string), `reason`, and with a template `answer` (`clean_answer` of the text)."""

  def __init__(self, spec: RowSpec, tokenizer: Any, template: ChatTemplate | None):
    self.spec, self.template = spec, template
    self.detok = Detokenizer(tokenizer)
    self.ids: list[int] = []
    self.reason: str | None = None  # "eos", "stop", "length" or "cancelled"; None while running
    self.cleaner = None if template is None else AnswerCleaner(template)
    self._pending = ""              # raw text not released yet: it could be the start of a stop string
    self._raw: list[str] = []       # raw text released, piece by piece
    self._sent: list[str] = []      # with a template: cleaned text released, piece by piece

  @property
  def text(self) -> str:
    return "".join(self._raw) + self._pending

  @property
  def sent(self) -> str:
    """What was streamed (with a template: cleaned)."""
    return "".join(self._sent if self.cleaner is not None else self._raw)

  @property
  def answer(self) -> str:
    """With a template: the answer as a turn's content; a cancelled row's is what was streamed."""
    if self.template is None:
      raise ValueError("answer needs a chat template: build the RowTracker with one")
    return self.sent if self.reason == "cancelled" else clean_answer(self.text, self.template)

  def _release(self, raw: str) -> None:
    if not raw:
      return
    self._raw.append(raw)
    out = raw
    if self.cleaner is not None:
      out = self.cleaner.feed(raw)
      if out:
        self._sent.append(out)
    if out and self.spec.on_text is not None:
      self.spec.on_text(out)

  def _finish(self, reason: str, raw: str) -> None:
    self.reason, self._pending = reason, ""
    self._release(raw)
    if self.cleaner is not None:  # what the cleaner still holds (an undecided last line): the answer's rest
      sent, final = self.sent, clean_answer(self.text, self.template)
      if len(final) > len(sent) and final.startswith(sent):
        self._sent.append(final[len(sent):])
        if self.spec.on_text is not None:
          self.spec.on_text(final[len(sent):])

  def step(self, token: int, eos_id: int | None, last: bool) -> bool:
    """Record one token (`last`: the program's final step); returns True when the row ends here."""
    if self.reason is not None:
      return True
    if self.spec.cancelled is not None and self.spec.cancelled.is_set():
      self.reason = "cancelled"
      return True
    self.ids.append(int(token))
    is_eos = eos_id is not None and int(token) == eos_id
    new = "" if is_eos else self.detok.push(token)
    final = is_eos or last or (self.spec.max_tokens is not None and len(self.ids) >= self.spec.max_tokens)
    if final:
      new += self.detok.flush()
    # A stop string that ends in this step starts in the text not yet released (`holdback` keeps every
    # suffix that could still grow into one), so only that short text is searched, never the whole row.
    pending = self._pending + new
    cut, hit = cut_at_stop(pending, self.spec.stops)
    if hit or final:
      self._finish("eos" if is_eos else "stop" if hit else "length", cut)
      return True
    keep = holdback(pending, self.spec.stops)
    self._release(pending[:len(pending) - keep])
    self._pending = pending[len(pending) - keep:]
    return False


class RowTracker:
  """The decode loop's host hook for one batch (`Generator.generate(..., host_hook=tracker)`): per-row stop
  strings, limits, streaming and cancellation. Rows past `specs` (padding up to `batch`) end at once."""

  def __init__(self, tokenizer: Any, specs: Sequence[RowSpec], batch: int, *, eos_id: int | None, max_steps: int,
               template: ChatTemplate | None = None):
    if len(specs) > batch:
      raise ValueError(f"{len(specs)} rows do not fit a batch of {batch}")
    self.rows = [Row(spec, tokenizer, template) for spec in specs]
    self.batch, self.eos_id, self.max_steps = batch, eos_id, max_steps
    self.host_s = 0.0  # time spent here (the decode loop waits for it every step)

  def __call__(self, tok_b: np.ndarray, step: np.ndarray, done_b: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    stop = np.ones(self.batch, bool)
    tok_b, done_b = np.asarray(tok_b), np.asarray(done_b)
    last = int(step) >= self.max_steps - 1
    for r, row in enumerate(self.rows):
      if not done_b[r]:
        stop[r] = row.step(int(tok_b[r]), self.eos_id, last)
    self.host_s += time.perf_counter() - t0
    return stop
