"""An async client for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).

Bounded concurrency (a semaphore), retries with exponential backoff and jitter on 429, 5xx, timeouts
and dropped connections (a `Retry-After` header is honoured), and no retry on other 4xx: a bad key or
model name will not fix itself. The key comes from an environment variable, never from a file.
Results are handed to a callback the moment each arrives, so the caller can commit them to its cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx

RETRY_STATUS = {408, 409, 429}


class EndpointError(RuntimeError):
  """A request that failed for good (after retries, or a 4xx that retrying cannot fix)."""


@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  prompt_tokens: int = 0
  completion_tokens: int = 0


@dataclasses.dataclass
class ChatClient:
  base_url: str
  model: str
  api_key_env: str = "OPENAI_API_KEY"
  concurrency: int = 8
  max_retries: int = 6
  timeout_s: float = 60.0
  backoff_s: float = 1.0
  max_backoff_s: float = 60.0
  temperature: float = 0.0
  stats: dict[str, int] = dataclasses.field(default_factory=lambda: {"requests": 0, "retries": 0, "failed": 0,
                                                                     "prompt_tokens": 0, "completion_tokens": 0})

  @classmethod
  def from_config(cls, c: Any, **overrides) -> ChatClient:
    fields = {f.name for f in dataclasses.fields(cls)} - {"stats"}
    kw = {k: getattr(c, k) for k in fields if hasattr(c, k)}
    kw.update(overrides)
    return cls(**kw)

  def _headers(self) -> dict[str, str]:
    key = os.environ.get(self.api_key_env) if self.api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}

  async def _one(self, http: httpx.AsyncClient, sem: asyncio.Semaphore, messages: list[dict],
                 extra: dict) -> Completion:
    body = {"model": self.model, "messages": messages, "temperature": self.temperature, **extra}
    url = self.base_url.rstrip("/") + "/chat/completions"
    last = ""
    for attempt in range(self.max_retries + 1):
      if attempt:
        self.stats["retries"] += 1
      async with sem:
        self.stats["requests"] += 1
        try:
          r = await http.post(url, json=body, headers=self._headers())
        except (httpx.TimeoutException, httpx.TransportError) as e:
          last, retry_after = f"{type(e).__name__}: {e}", None
        else:
          if r.status_code == 200:
            try:
              data = r.json()
              text = data["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as e:
              raise EndpointError(f"{url}: a 200 reply that is not a chat completion ({e}): {r.text[:200]}") from e
            usage = data.get("usage") or {}
            c = Completion(text or "", int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
            self.stats["prompt_tokens"] += c.prompt_tokens
            self.stats["completion_tokens"] += c.completion_tokens
            return c
          last = f"HTTP {r.status_code}: {r.text[:200]}"
          if r.status_code < 500 and r.status_code not in RETRY_STATUS:
            self.stats["failed"] += 1
            hint = " (check the key in $" + self.api_key_env + ")" if r.status_code in (401, 403) else ""
            raise EndpointError(f"{url}: {last}{hint}")
          retry_after = r.headers.get("retry-after")
      if attempt == self.max_retries:
        break
      delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random())
      if retry_after:
        try:
          delay = min(self.max_backoff_s, float(retry_after))
        except ValueError:
          pass
      await asyncio.sleep(delay)
    self.stats["failed"] += 1
    raise EndpointError(f"{url}: gave up after {self.max_retries + 1} attempts; last: {last}")

  async def _run(self, requests: Sequence[list[dict]], on_done: Callable[[int, Completion | Exception], None],
                 extra: dict) -> None:
    sem = asyncio.Semaphore(self.concurrency)
    limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
    async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as http:
      async def task(i: int) -> None:
        try:
          result: Completion | Exception = await self._one(http, sem, requests[i], extra)
        except EndpointError as e:
          result = e
        on_done(i, result)

      await asyncio.gather(*(task(i) for i in range(len(requests))))

  def run(self, requests: Sequence[list[dict]], on_done: Callable[[int, Completion | Exception], None],
          **extra) -> None:
    """Send every request (a message list); `on_done(index, Completion or EndpointError)` as each ends."""
    if requests:
      asyncio.run(self._run(requests, on_done, extra))
