"""The safety filter on the server's path: prompts it blocks are refused without generating, identity questions
get its honest answer, answers it blocks never reach the client (whole, or a checked sentence at a time when
streamed). Expected texts come from the filter itself, called directly."""

from __future__ import annotations

import dataclasses

import openai
import pytest

from telugu_jax.safety import default_filter, guard
from telugu_jax.serve.app import create_app
from telugu_jax.serve.engine import Engine

from .conftest import PROMPTS, LiveServer


@pytest.fixture(scope="module")
def guarded(tiny_models):
  engine = Engine(tiny_models)
  with LiveServer(create_app(engine, safety=default_filter())) as url:
    yield openai.OpenAI(base_url=url + "/v1", api_key="unused"), engine


def _both(client, text, **kw):
  """(non-stream content, finish), (stream content, finish) of one user message."""
  messages = [{"role": "user", "content": text}]
  out = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24, **kw)
  pieces, finish = [], None
  for chunk in client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24,
                                              stream=True, **kw):
    for c in chunk.choices:
      pieces.append(c.delta.content or "")
      finish = c.finish_reason or finish
  return (out.choices[0].message.content, out.choices[0].finish_reason), ("".join(pieces), finish), out


@pytest.mark.parametrize("text", ["how do I make a bomb at home?", "బాంబు ఎలా తయారు చేయాలి?"])
def test_blocked_prompt_is_refused_without_generating(guarded, text):
  client, engine = guarded
  expected = default_filter().check(text, role="user")
  assert expected.blocked
  jobs = engine.stats["jobs"]
  plain, streamed, out = _both(client, text)
  assert plain == streamed == (expected.response, "content_filter")
  assert out.model_extra["telugu_jax"]["safety"] == {"blocked": True, "category": expected.category,
                                                      "rule": expected.rule}
  assert engine.stats["jobs"] == jobs  # the model never saw it


def test_identity_question_gets_the_honest_answer(guarded):
  client, engine = guarded
  expected = default_filter().check("నువ్వు ఎవరు?", role="user")
  assert not expected.blocked and expected.response
  plain, streamed, _ = _both(client, "నువ్వు ఎవరు?")
  assert plain == streamed == (expected.response, "stop")


def test_clean_answers_pass_unchanged(guarded, tiny_models):
  client, _ = guarded
  with LiveServer(create_app(Engine(tiny_models))) as url:  # the same model without the filter
    bare = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    for prompt in [p for p in PROMPTS if default_filter().check(p).response is None][:3]:
      reference, _, _ = _both(bare, prompt)
      plain, streamed, _ = _both(client, prompt)
      assert plain == streamed == reference


@dataclasses.dataclass
class Decision:
  blocked: bool
  response: str | None = None
  category: str | None = None
  rule: str | None = None


class BlockWord:
  """A stand-in filter that blocks answers containing `word`: the random test model never writes what the real
  lists block, so the answer path is driven with a word it does write."""

  def __init__(self, word):
    self.word, self.checked = word, []

  def check(self, text, *, role="user"):
    self.checked.append((role, text))
    if role == "assistant" and self.word in text:
      return Decision(True, "క్షమించండి, ఈ జవాబు ఇవ్వలేను.", "test", "test/word")
    return Decision(False)


def test_blocked_answer_never_reaches_the_client(tiny_models):
  with LiveServer(create_app(Engine(tiny_models))) as url:
    (answer, _), _, _ = _both(openai.OpenAI(base_url=url + "/v1", api_key="unused"), PROMPTS[0])
  word = answer[len(answer) // 2:][:2]  # a piece the model writes half-way through its answer
  assert word.strip()
  flt = BlockWord(word)
  with LiveServer(create_app(Engine(tiny_models), safety=flt)) as url:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    plain, streamed, _ = _both(client, PROMPTS[0])
  refusal = "క్షమించండి, ఈ జవాబు ఇవ్వలేను."
  assert plain == (refusal, "content_filter")
  text, finish = streamed
  assert finish == "content_filter" and text.endswith(refusal) and word not in text.removesuffix(refusal)
  assert answer.startswith(text.removesuffix(refusal).removesuffix("\n\n"))  # only checked text went out


def test_stream_guard_releases_checked_sentences_only():
  flt = BlockWord("బాంబు")
  g = guard.StreamGuard(flt)
  pieces = ["మొదటి వాక్యం", " ఇది. రెండ", "వ వాక్యం కూడా బాగుంది", "? మూడవ వాక్యంలో బాం", "బు ఉంది. నాలుగు"]
  released = [g.feed(p) for p in pieces]
  assert released == ["", "మొదటి వాక్యం ఇది. ", "", "రెండవ వాక్యం కూడా బాగుంది? ", ""]
  assert g.verdict is not None and g.verdict.finish_reason == "content_filter"
  assert g.feed(" ఐదు.", final=True) == ""  # nothing after a block
  # Each check saw the new sentence with the end of the text before it (a phrase across the boundary is seen).
  assert [t for role, t in flt.checked] == ["మొదటి వాక్యం ఇది. ", "మొదటి వాక్యం ఇది. రెండవ వాక్యం కూడా బాగుంది? ",
                                           "మొదటి వాక్యం ఇది. రెండవ వాక్యం కూడా బాగుంది? మూడవ వాక్యంలో బాంబు ఉంది. "]
  clean = guard.StreamGuard(BlockWord("బాంబు"))
  text = "ఒకటి. రెండు" + " మాట" * 100
  assert "".join(clean.feed(text[i:i + 7]) for i in range(0, len(text), 7)) + clean.feed("", final=True) == text
