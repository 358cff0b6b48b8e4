"""`answer_batch`, the one batch loop of chat file mode, evaluation and DPO sampling: answers come back in the
prompts' order and equal each prompt generated alone; batches are padded to one size; `sort=False` keeps
rows together and a sampling function sees each batch's first row."""

from __future__ import annotations

import jax
import pytest

from telugu_jax.chat_format import ChatFormat
from telugu_jax.generate import Generator, SamplingConfig
from telugu_jax.inference import answer_batch
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.llama import Llama

QUESTIONS = ["మీ పేరు ఏమిటి?", "తెలుగు భాష గురించి చెప్పండి, దయచేసి కొంచెం వివరంగా.", "హైదరాబాదు?",
             "వర్షాకాలంలో రైతులు ఏం చేస్తారు?", "ఒక చిన్న కవిత రాయండి."]


@pytest.fixture(scope="module")
def setup(sp_tokenizer):
  config = LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size, max_seq_len=256)
  variables = jax.jit(Llama(config).init_variables)(jax.random.key(3))
  gen = Generator(config, variables, tokenizer=sp_tokenizer, prompt_bucket=16)
  fmt = ChatFormat(sp_tokenizer)
  return gen, fmt, [fmt.encode_prompt([{"role": "user", "content": q}]).tolist() for q in QUESTIONS]


def test_answers_in_prompt_order_equal_each_prompt_alone(setup):
  gen, fmt, prompts = setup
  sampling = SamplingConfig(max_new_tokens=10, temperature=0)
  stops = fmt.template.stop_strings
  sizes = []
  outs = answer_batch(gen, prompts, sampling, stop_strings=stops, batch_size=2, on_batch=sizes.append)
  assert sizes == [2, 2, 1]
  for p, out in zip(prompts, outs, strict=True):
    [alone] = gen.generate([p], sampling, stop_strings=stops)
    assert (out.ids, out.text, out.finish_reason) == (alone.ids, alone.text, alone.finish_reason)


def test_unsorted_batches_keep_rows_together_and_take_a_sampling_per_batch(setup, monkeypatch):
  gen, _, prompts = setup
  rows = [p for p in prompts[:3] for _ in range(2)]  # 2 samples of each prompt side by side
  seen = []
  real = gen.generate

  def spy(batch, sampling, **kw):
    seen.append(([rows.index(p) for p in batch], sampling.seed, kw["pad_batch_to"]))
    return real(batch, sampling, **kw)

  monkeypatch.setattr(gen, "generate", spy)
  outs = answer_batch(gen, rows, lambda start: SamplingConfig(max_new_tokens=4, temperature=0.8, seed=100 + start),
                      batch_size=4, sort=False)
  assert seen == [([0, 0, 2, 2], 100, 4), ([4, 4], 104, 4)]
  assert len(outs) == len(rows) and all(len(o.ids) >= 1 for o in outs)
  sorted_seen = []
  monkeypatch.setattr(gen, "generate", lambda b, s, **kw: sorted_seen.append([len(p) for p in b]) or real(b, s, **kw))
  answer_batch(gen, prompts, SamplingConfig(max_new_tokens=2, temperature=0), batch_size=2)
  lengths = [n for batch in sorted_seen for n in batch]
  assert lengths == sorted(len(p) for p in prompts)  # sorted by length: a batch shares a prompt bucket
