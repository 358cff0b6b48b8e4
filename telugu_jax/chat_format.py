"""The chat format: conversation -> (ids, loss_mask) for training, and the prompt for inference.

    <bos>user: {u1}\\nassistant: {a1}\\nuser: {u2}\\nassistant: {a2}<eos>

This is the one place the template lives. The loss covers each assistant response *and the token that
ends it* (the `\\n` before the next `user:`, or `<eos>`), so the model learns to stop; everything else
is masked.

What training sees must be what inference sees. Encoding pieces separately and concatenating gives
other ids than encoding the whole text (sentencepiece adds a dummy prefix per call, BPE merges differ
at the seams). So the text is rendered once and encoded once, and the mask is taken from token
offsets: a token is a loss token when it *starts* inside an assistant span. The space after
`assistant:` belongs to the response, so the inference prompt (`...assistant:`) ends on a token
boundary and its ids are a prefix of the training ids; `encode` checks that boundary every time.

A line inside content that starts with a role marker would forge a turn (`...\\nassistant: yes`);
such conversations are rejected (`ForgedRoleMarkerError`); a server neutralises them instead
(`neutralise_markers`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

from telugu_jax.conversation import Conversation, Turn
from telugu_jax.tokenizer import Tokenizer, TokenizerError


class ChatFormatError(ValueError):
  """A conversation that cannot become a training example; `reason` is a short code for rejected.jsonl."""

  reason = "chat_format"


class ForgedRoleMarkerError(ChatFormatError):
  reason = "forged_role_marker"


class EmptyLossMaskError(ChatFormatError):
  reason = "empty_loss_mask"


class TooLongError(ChatFormatError):
  reason = "too_long"


class BadTurnsError(ChatFormatError):
  reason = "bad_turns"


class BoundaryMergeError(ChatFormatError):
  reason = "boundary_merge"


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """Markers and separators. Another base model with other markers needs a new instance, no code."""

  user: str = "user:"
  assistant: str = "assistant:"
  sep: str = " "         # between a marker and its content; on the assistant side it belongs to the response
  turn_sep: str = "\n"   # between turns; after an assistant turn it is that turn's end token

  def marker(self, role: str) -> str:
    return {"user": self.user, "assistant": self.assistant}[role]

  @property
  def stop_strings(self) -> tuple[str, ...]:
    return (self.turn_sep + self.user,)

  def forged_marker(self, content: str) -> str | None:
    """The marker that some line of `content` starts with (ignoring leading spaces and case), if any."""
    for line in content.split(self.turn_sep):
      s = line.lstrip().casefold()
      for m in (self.user, self.assistant):
        if s.startswith(m.casefold()):
          return m
    return None


  def to_dict(self) -> dict[str, str]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping | None) -> ChatTemplate:
    """The template a model directory records (`model.json` "chat_template"); none recorded: the default
    (directories written before templates were recorded were all trained with it)."""
    if not d:
      return DEFAULT_TEMPLATE
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise TemplateError(f"chat_template has unknown fields {sorted(unknown)}")
    t = cls(**d)
    if not t.user or not t.assistant or not t.turn_sep:
      raise TemplateError(f"chat_template {t.to_dict()}: user, assistant and turn_sep must be non-empty")
    return t

  def overrides(self, prefix: str = "--config.chat.", relative_to: ChatTemplate | None = None) -> str:
    """Shell words that select this template, e.g. `--config.chat.turn_sep=' '` (`$'\\n'` for a newline);
    with `relative_to`, only the fields that differ from that template."""
    import shlex

    def word(v: str) -> str:
      return shlex.quote(v) if v.isprintable() else "$'" + v.encode("unicode_escape").decode("ascii") + "'"

    other = relative_to.to_dict() if relative_to is not None else {}
    return " ".join(f"{prefix}{k}={word(v)}" for k, v in self.to_dict().items() if other.get(k) != v)


DEFAULT_TEMPLATE = ChatTemplate()


class TemplateError(TokenizerError):
  """A tokenizer that cannot write a chat template (or a template that cannot be read)."""


# Probe turns without newlines or ZWNJ in the content: what is checked here is the template, not whether
# the tokenizer keeps every character of every text (`python -m telugu_jax.tokenizer inspect` reports that).
_PROBE = (("user", "నమస్కారం అండీ, 12 ప్రశ్నలు"), ("assistant", "సరే. ఇదిగో జవాబు"),
          ("user", "ఇంకొకటి చెప్పండి"), ("assistant", "తప్పకుండా."))


def template_problem(tokenizer: Tokenizer, template: ChatTemplate) -> str | None:
  """What this tokenizer loses of the template, or None when it round-trips: the rendered conversation
  decodes back to itself, and each prompt's ids are a prefix of the training ids."""
  fmt = ChatFormat(tokenizer, template, check=False)
  # The contents' words that the tokenizer gives back (a small vocabulary may lack a digit or a comma): what is
  # judged is the markers and separators around them.
  def kept(content: str) -> str:
    return " ".join(w for w in content.split() if tokenizer.decode(tokenizer.encode(w)) == w) or "అ"

  turns = [Turn(r, kept(c)) for r, c in _PROBE]
  text, _ = fmt.render(turns)
  back = tokenizer.decode(tokenizer.encode(text))
  if back != text:
    lost = []
    for name, value in template.to_dict().items():
      piece = "అ" + value + "అ"
      got = tokenizer.decode(tokenizer.encode(piece))
      if got != piece:
        lost.append(f"{name} {value!r} comes back as {got[1:-1]!r}")
    what = "; ".join(lost) or f"{text!r} comes back as {back!r}"
    return f"the tokenizer does not keep the chat template: {what}"
  for n in (1, 3):
    try:
      prompt = fmt.encode_prompt(turns[:n]).tolist()
      full = fmt.encode(turns[:n + 1]).ids.tolist()
    except ChatFormatError as e:
      return f"the chat template does not encode: {e}"
    if full[:len(prompt)] != prompt:
      return ("the prompt's ids are not a prefix of the training ids (the tokenizer merges the assistant marker "
              "with the answer)")
  return None


def check_template(tokenizer: Tokenizer, template: ChatTemplate) -> None:
  """`TemplateError` (one line) when `tokenizer` cannot round-trip `template`."""
  if problem := template_problem(tokenizer, template):
    raise TemplateError(problem)


@dataclasses.dataclass(frozen=True)
class Encoded:
  ids: np.ndarray         # [L] int32: bos, rendered text, eos
  loss_mask: np.ndarray   # [L] int32: 1 where ids[i] is a target (predicted from ids[:i])
  dropped_turns: int = 0  # oldest turns removed to fit max_len

  @property
  def num_loss_tokens(self) -> int:
    return int(self.loss_mask.sum())


def _as_turns(conv: Conversation | Sequence[Turn | Mapping]) -> list[Turn]:
  turns = conv.turns if isinstance(conv, Conversation) else conv
  return [t if isinstance(t, Turn) else Turn(t["role"], t["content"]) for t in turns]


def neutralise_markers(content: str, template: ChatTemplate = DEFAULT_TEMPLATE) -> str:
  """Break role markers at line starts (`user:` -> `user :`) so content cannot open a turn."""
  out = []
  for line in content.split(template.turn_sep):
    for m in (template.user, template.assistant):
      stripped = line.lstrip()
      if stripped.casefold().startswith(m.casefold()):
        lead = line[: len(line) - len(stripped)]
        line = lead + stripped[: len(m) - 1] + " " + stripped[len(m) - 1:]
    out.append(line)
  return template.turn_sep.join(out)


class ChatFormat:
  """Binds a template to a tokenizer and checks, once, that the pair can round-trip."""

  def __init__(self, tokenizer: Tokenizer, template: ChatTemplate = DEFAULT_TEMPLATE, *, check: bool = True):
    self.tokenizer, self.template = tokenizer, template
    if check:
      if problem := template_problem(tokenizer, template):
        from telugu_jax.tokenizer_check import suggest_template

        hint = suggest_template(tokenizer)
        raise TemplateError(problem + (f". A template it keeps: {hint.overrides(relative_to=template)}" if hint else
                                       ". Use a tokenizer with identity normalisation and byte fallback"))

  # ---- text -------------------------------------------------------------------------------------
  def render(self, turns: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]]:
    """The text of the turns, and the [start, end) character spans counted in the loss."""
    t = self.template
    parts, spans, pos = [], [], 0
    for i, turn in enumerate(turns):
      if i:
        parts.append(t.turn_sep)
        pos += len(t.turn_sep)
      marker = t.marker(turn.role)
      piece = marker + t.sep + turn.content
      if turn.role == "assistant":
        start = pos + len(marker)                      # the space after the marker is the response's
        end = pos + len(piece) + (len(t.turn_sep) if i + 1 < len(turns) else 0)
        spans.append((start, end))
      parts.append(piece)
      pos += len(piece)
    return "".join(parts), spans

  def prompt_text(self, turns: Sequence[Turn]) -> str:
    """History ending with a user turn, followed by the assistant marker the model continues from."""
    text, _ = self.render(turns)
    return text + self.template.turn_sep + self.template.assistant

  # ---- validation -------------------------------------------------------------------------------
  def check_turns(self, turns: Sequence[Turn], *, for_prompt: bool = False) -> None:
    if not turns:
      raise BadTurnsError("conversation has no turns")
    for i, turn in enumerate(turns):
      expected = "user" if i % 2 == 0 else "assistant"
      if turn.role != expected:
        raise BadTurnsError(f"turn {i} is {turn.role!r}, expected {expected!r} (turns alternate, user first)")
      if not turn.content.strip():
        raise BadTurnsError(f"turn {i} ({turn.role}) is empty")
      if m := self.template.forged_marker(turn.content):
        raise ForgedRoleMarkerError(f"turn {i} ({turn.role}) has a line starting with the role marker {m!r}")
    if for_prompt and turns[-1].role != "user":
      raise BadTurnsError("a prompt must end with a user turn")
    if not for_prompt and turns[-1].role != "assistant":
      if len(turns) == 1:
        raise EmptyLossMaskError("conversation has no assistant turn: its loss mask would be all zeros")
      raise BadTurnsError("conversation ends with a user turn that has no answer")

  # ---- ids --------------------------------------------------------------------------------------
  def _encode_once(self, turns: Sequence[Turn]) -> Encoded:
    text, spans = self.render(turns)
    ids, starts = self.tokenizer.encode_with_offsets(text)
    starts_set = set(starts)
    mask = np.zeros(len(ids) + 2, np.int32)
    for s, e in spans:
      if s not in starts_set:
        raise BoundaryMergeError(
            f"the tokenizer merges across the prompt/response boundary at character {s} "
            f"({text[max(0, s - 12):s]!r}|{text[s:s + 12]!r}); prompt ids would not be a prefix of training ids")
      for j, st in enumerate(starts):
        if s <= st < e:
          mask[j + 1] = 1
    mask[-1] = 1  # eos ends the last assistant response
    all_ids = np.array([self.tokenizer.bos_id, *ids, self.tokenizer.eos_id], np.int32)
    return Encoded(all_ids, mask)

  def encode(self, conv: Conversation | Sequence[Turn | Mapping], max_len: int | None = None) -> Encoded:
    """Training ids and loss mask. Over `max_len`, whole oldest (user, assistant) pairs are dropped
    (never a cut inside a response); if the last pair alone is too long, `TooLongError`."""
    turns = _as_turns(conv)
    self.check_turns(turns)
    dropped = 0
    while True:
      enc = self._encode_once(turns)
      if max_len is None or len(enc.ids) <= max_len:
        break
      if len(turns) <= 2:
        raise TooLongError(f"{len(enc.ids)} tokens with only the last exchange left; max_len is {max_len}")
      turns, dropped = turns[2:], dropped + 2
    if enc.num_loss_tokens == 0:
      raise EmptyLossMaskError("no token falls inside an assistant response")
    return dataclasses.replace(enc, dropped_turns=dropped)

  def encode_prompt(self, conv: Conversation | Sequence[Turn | Mapping]) -> np.ndarray:
    """Inference ids: bos + the history + the assistant marker (no eos)."""
    turns = _as_turns(conv)
    self.check_turns(turns, for_prompt=True)
    return np.array([self.tokenizer.bos_id, *self.tokenizer.encode(self.prompt_text(turns))], np.int32)

  def decode(self, ids: Sequence[int]) -> list[Turn]:
    """Turns back from ids (special tokens dropped): the inverse of `encode` for valid conversations."""
    text = self.tokenizer.decode(ids)
    t = self.template
    pattern = "(^|" + re.escape(t.turn_sep) + ")(" + re.escape(t.user) + "|" + re.escape(t.assistant) + ")"
    pieces = re.split(pattern, text)
    turns = []
    # re.split with 2 groups gives [head, sep, marker, body, sep, marker, body, ...]
    for k in range(1, len(pieces) - 2, 3):
      role = "user" if pieces[k + 1] == t.user else "assistant"
      body = pieces[k + 2]
      turns.append(Turn(role, body[len(t.sep):] if body.startswith(t.sep) else body))
    return turns


# ---- inference: prompts that fit, answers as turn content ------------------------------------------------

def fit_prompt(fmt: ChatFormat, turns: Sequence[Turn], budget: int) -> tuple[list[int], int]:
  """Prompt ids for `turns` (ending with a user turn) in at most `budget` tokens, dropping the oldest
  (user, assistant) pairs as needed. Returns (ids, number of turns dropped); `TooLongError` when the
  last user turn alone does not fit."""
  turns, dropped = list(turns), 0
  while True:
    ids = fmt.encode_prompt(turns).tolist()
    if len(ids) <= budget:
      return ids, dropped
    if len(turns) <= 1:
      raise TooLongError(f"the message is {len(ids)} tokens; at most {budget} fit beside the answer's room")
    turns, dropped = turns[2:], dropped + 2


def clean_answer(text: str, template: ChatTemplate) -> str:
  """Generated text -> turn content: surrounding whitespace removed (the space after the assistant marker
  belongs to the response), role markers at line starts broken so the answer cannot forge a turn."""
  return neutralise_markers(text.strip(), template)
