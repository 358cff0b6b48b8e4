"""Request and response models of the OpenAI chat-completions protocol (the subset this server speaks).

Pydantic validates every request before any work is done, so a bad request is a 400 with a message that
names the field, never a 500 from deep inside generation. Fields the protocol has but this server cannot
honour (tools, logprobs, penalties other than 0, n > 1) are accepted only at their neutral value and
rejected otherwise, with a message saying so: nothing asked for is silently ignored. Fields we do not know
at all are rejected too (`extra="forbid"`), so a typo (`max_token`) is an error, not a default.

Responses are plain dicts built by `completion`, `chunk` and `error_body`: the openai client reads them as
its own models, and extra fields (our `telugu_jax` notes) are kept in its `model_extra`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from telugu_jax.conversation import unicode_problem

MAX_STOP_STRINGS = 4  # as OpenAI


class TextPart(BaseModel):
  model_config = ConfigDict(extra="forbid")
  type: Literal["text"]
  text: str


class Message(BaseModel):
  model_config = ConfigDict(extra="forbid")
  role: Literal["system", "developer", "user", "assistant"]
  content: str | list[TextPart]
  name: str | None = None

  def text(self) -> str:
    if isinstance(self.content, str):
      return self.content
    return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
  model_config = ConfigDict(extra="forbid")
  include_usage: StrictBool = False


class ResponseFormat(BaseModel):
  model_config = ConfigDict(extra="forbid")
  type: Literal["text"]


def _check_unicode(value, where: str) -> None:
  """Text that cannot be encoded as UTF-8 (a lone surrogate, valid in JSON as "\\ud800") is a 400 naming the
  field, here where it enters, not a 500 from the tokenizer."""
  if isinstance(value, str):
    if (why := unicode_problem(value)) is not None:
      raise ValueError(f"{where or 'body'}: invalid Unicode ({why})")
  elif isinstance(value, dict):
    for k, v in value.items():
      _check_unicode(k, where)
      _check_unicode(v, f"{where}.{k}" if where else str(k))
  elif isinstance(value, list):
    for i, v in enumerate(value):
      _check_unicode(v, f"{where}[{i}]")


class ChatCompletionRequest(BaseModel):
  model_config = ConfigDict(extra="forbid")

  model: str
  messages: Annotated[list[Message], Field(min_length=1)]
  stream: StrictBool = False      # "yes" or 1 is a 400, not true
  stream_options: StreamOptions | None = None
  temperature: Annotated[float, Field(ge=0, le=2)] | None = None
  top_p: Annotated[float, Field(gt=0, le=1)] | None = None
  max_tokens: Annotated[int, Field(ge=1)] | None = None
  max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
  stop: str | list[str] | None = None
  n: int | None = None
  seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None    # a 64-bit integer, as OpenAI's
  user: str | None = None
  frequency_penalty: float | None = None
  presence_penalty: float | None = None
  logprobs: bool | None = None
  response_format: ResponseFormat | None = None

  @model_validator(mode="before")
  @classmethod
  def _valid_text(cls, data):
    _check_unicode(data, "")
    return data

  @field_validator("n")
  @classmethod
  def _only_one(cls, n):
    if n is not None and n != 1:
      raise ValueError("only n=1 is supported: send one request per completion you want")
    return n

  @field_validator("stop")
  @classmethod
  def _stops(cls, stop):
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
      raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    if any(not s for s in stops):
      raise ValueError("stop strings must be non-empty")
    return stops

  @field_validator("frequency_penalty", "presence_penalty")
  @classmethod
  def _no_penalty(cls, v):
    if v:
      raise ValueError("frequency and presence penalties are not supported (leave them out or 0)")
    return v

  @field_validator("logprobs")
  @classmethod
  def _no_logprobs(cls, v):
    if v:
      raise ValueError("logprobs are not supported")
    return v

  @model_validator(mode="after")
  def _one_limit(self):
    if self.max_tokens is not None and self.max_completion_tokens is not None \
        and self.max_tokens != self.max_completion_tokens:
      raise ValueError("max_tokens and max_completion_tokens disagree: send one of them")
    return self

  @property
  def token_limit(self) -> int | None:
    return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

  @property
  def stop_strings(self) -> tuple[str, ...]:
    return tuple(self.stop or ())


# ---- responses -----------------------------------------------------------------------------------------

def new_id() -> str:
  return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
               notes: dict) -> dict:
  return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": finish_reason, "logprobs": None}],
          "usage": usage(prompt_tokens, completion_tokens), "telugu_jax": notes}


def chunk(cid: str, model: str, created: int, *, delta: dict | None = None, finish_reason: str | None = None,
          usage_: dict | None = None, notes: dict | None = None) -> dict:
  """One `chat.completion.chunk`; with `usage_` and no delta it is the final usage chunk (empty choices)."""
  out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
  if usage_ is not None and delta is None:
    out["choices"] = []
    out["usage"] = usage_
  else:
    out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}]
  if notes is not None:
    out["telugu_jax"] = notes
  return out


def error_body(message: str, type_: str = "invalid_request_error", *, param: str | None = None,
               code: str | None = None) -> dict:
  return {"error": {"message": message, "type": type_, "param": param, "code": code}}
