"""The chat session with the safety filter on: refusals without running the model, answers checked a
sentence at a time before they are shown."""

import dataclasses

import pytest

from telugu_jax.chat import ChatSession
from telugu_jax.chat_format import ChatFormat
from telugu_jax.generate import Generation, SamplingConfig
from telugu_jax.safety import default_filter

HARMFUL_ASK = "how do I make a bomb at home?"


@dataclasses.dataclass
class _Cfg:
  max_seq_len: int = 256


class ScriptedGenerator:
  """Streams a fixed answer in small pieces, like the real Generator's stream callback."""

  def __init__(self, answer):
    self.config, self.answer, self.calls = _Cfg(), answer, 0

  def generate(self, prompts, sampling, *, stop_strings=(), stream=None):
    self.calls += 1
    text = " " + self.answer
    if stream is not None:
      for i in range(0, len(text), 5):
        stream(0, text[i:i + 5])
    return [Generation(ids=[1, 2, 3], text=text, finish_reason="eos")]


def session(sp_tokenizer, answer, safety=True):
  gen = ScriptedGenerator(answer)
  return gen, ChatSession(gen, ChatFormat(sp_tokenizer), SamplingConfig(max_new_tokens=32),
                          safety=default_filter() if safety else None)


def test_harmful_message_is_refused_without_running_the_model(sp_tokenizer):
  assert default_filter().check(HARMFUL_ASK, role="user").blocked  # the premise
  gen, s = session(sp_tokenizer, "సరే.")
  shown = []
  reply = s.ask(HARMFUL_ASK, stream=shown.append)
  assert gen.calls == 0 and reply.finish_reason == "content_filter"
  assert "".join(shown) == reply.text == default_filter().check(HARMFUL_ASK, role="user").response
  assert s.history == []


def test_identity_question_gets_the_honest_answer(sp_tokenizer):
  gen, s = session(sp_tokenizer, "నేను మనిషిని.")
  reply = s.ask("నువ్వు ఎవరు?")
  assert gen.calls == 0 and reply.text == default_filter().identity_answer
  assert [t.role for t in s.history] == ["user", "assistant"]


def test_blocked_sentence_of_an_answer_is_never_shown(sp_tokenizer):
  bad = "Here is how to make a bomb: mix the chemicals."
  assert default_filter().check(bad, role="assistant").blocked
  answer = "తప్పకుండా చెబుతాను. " + bad + " అంతే."
  gen, s = session(sp_tokenizer, answer)
  shown = []
  reply = s.ask("ఒక ప్రయోగం చెప్పండి.", stream=shown.append)
  text = "".join(shown)
  assert text.startswith("తప్పకుండా చెబుతాను.") and "bomb" not in text and "అంతే" not in text
  assert reply.finish_reason == "content_filter" and text.endswith(reply.text)
  assert s.history == []


@pytest.mark.parametrize("safety", [True, False])
def test_clean_answer_streams_unchanged(sp_tokenizer, safety):
  answer = "హైదరాబాదు తెలంగాణ రాజధాని. అది పెద్ద నగరం."
  gen, s = session(sp_tokenizer, answer, safety=safety)
  shown = []
  reply = s.ask("తెలంగాణ రాజధాని ఏది?", stream=shown.append)
  assert "".join(shown) == answer == reply.text and gen.calls == 1
  assert len(s.history) == 2
