"""The translation backend interface, and the OpenAI-compatible chat backend.

A backend translates a list of texts and reports each result (or error) through a callback as soon as
it has it: `translate(texts, on_done)` with `on_done(index, text | Exception, usage)`. It declares
how protected spans are masked for it (`style`) and whether texts must be cut into sentences first
(`split_sentences`: small seq2seq models like IndicTrans2 are trained on sentences).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from telugu_jax.data.translate.client import ChatClient, Completion

OnDone = Callable[[int, "str | Exception", dict], None]

LANG_NAMES = {"eng_Latn": "English", "tel_Telu": "Telugu", "hin_Deva": "Hindi"}

PROMPT = """You are a professional translator. Translate the user's text from {src} into natural, fluent {tgt} \
as a native speaker would write it.
Rules:
- Keep the formatting exactly: line breaks, blank lines, lists, Markdown, punctuation style.
- Tokens like ⟦0⟧, ⟦1⟧ stand for code, links, numbers or placeholders: copy each one unchanged, once.
- Keep proper names recognisable; do not add explanations, notes or quotes.
- Reply with the translation only."""


class Backend(Protocol):
  name: str
  model: str
  style: str
  split_sentences: bool

  def translate(self, texts: Sequence[str], on_done: OnDone) -> None: ...


class OpenAIBackend:
  """Any OpenAI-compatible chat endpoint, through `ChatClient` (async, bounded, retried)."""

  name = "openai"
  style = "llm"
  split_sentences = False

  def __init__(self, client: ChatClient, src_lang: str = "eng_Latn", tgt_lang: str = "tel_Telu"):
    self.client, self.model = client, client.model
    self.system = PROMPT.format(src=LANG_NAMES.get(src_lang, src_lang), tgt=LANG_NAMES.get(tgt_lang, tgt_lang))

  def translate(self, texts: Sequence[str], on_done: OnDone) -> None:
    requests = [[{"role": "system", "content": self.system}, {"role": "user", "content": t}] for t in texts]

    def done(i: int, result: Completion | Exception) -> None:
      if isinstance(result, Exception):
        on_done(i, result, {})
      else:
        on_done(i, result.text.strip(), {"prompt_tokens": result.prompt_tokens,
                                          "completion_tokens": result.completion_tokens})

    self.client.run(requests, done)
