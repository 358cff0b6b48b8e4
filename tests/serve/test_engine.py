"""The batching engine without HTTP: batches form as documented, each row keeps its own limits and stop
strings (checked against `Generator.generate` run alone), and streaming shows only final text."""

from __future__ import annotations

import threading

import pytest

from telugu_jax.chat_format import DEFAULT_TEMPLATE, clean_answer
from telugu_jax.generate import SamplingConfig
from telugu_jax.rows import RowSpec, RowTracker, cut_at_stop
from telugu_jax.serve.engine import Engine, Job, pow2_at_least

from .conftest import PROMPTS


class Collect:
  """A job's sink that records deltas and the result, and signals when done."""

  def __init__(self):
    self.deltas, self.result, self.error, self.done = [], None, None, threading.Event()

  def __call__(self, kind, value):
    if kind == "delta":
      self.deltas.append(value)
    elif kind == "done":
      self.result = value
      self.done.set()
    else:
      self.error = value
      self.done.set()


RAW = " నమస్కారం,  మీకు\n  assist ఏమి కావాలి?\nassistant: అవును\nuser: ఇంకొకటి"


@pytest.mark.parametrize("stops", [DEFAULT_TEMPLATE.stop_strings, DEFAULT_TEMPLATE.stop_strings + ("కావా",)])
@pytest.mark.parametrize("raw", [RAW, RAW.replace("ఇంకొకటి", "") + "\ufffd", "  \n user:x", "చాలా బాగుంది   "])
def test_streamed_text_is_always_a_prefix_of_the_final_answer(raw, stops):
  """A row fed its text a character at a time (as tokens) streams only what its final answer keeps."""

  class CharTokenizer:  # token i is character i of `raw`
    eos_id = -1

    def decode(self, ids):
      return "".join(raw[i] for i in ids)

  final = clean_answer(cut_at_stop(raw, stops)[0], DEFAULT_TEMPLATE)
  shown: list[str] = []
  row = RowTracker(CharTokenizer(), [RowSpec(stops=stops, on_text=shown.append)], 1, eos_id=None,
                   max_steps=len(raw), template=DEFAULT_TEMPLATE).rows[0]
  for i in range(len(raw)):
    if row.step(i, None, last=i == len(raw) - 1):
      break
    assert final.startswith("".join(shown)), (i, shown, final)  # never shows what the answer drops
  assert "".join(shown) == row.answer == final
  assert "\nassistant:" not in final  # the forged marker in the answer is broken


def test_pow2():
  assert [pow2_at_least(n, 16) for n in (1, 16, 17, 24, 200)] == [16, 16, 32, 32, 256]
  assert [pow2_at_least(n) for n in (1, 2, 3, 5)] == [1, 2, 4, 8]


def test_rows_of_one_batch_keep_their_own_limits_and_stops(tiny_models):
  served = tiny_models["tiny"]
  engine = Engine(tiny_models, batch_window_s=5.0, max_batch=3).start()  # the 3rd job fills the batch at once
  try:
    # Row 1's stop string is a piece from the middle of its free answer, so it must end there.
    ids1 = served.fmt.encode_prompt([{"role": "user", "content": PROMPTS[1]}]).tolist()
    [free] = served.generator.generate([ids1], SamplingConfig(max_new_tokens=16, temperature=0),
                                       stop_strings=served.fmt.template.stop_strings)
    middle = free.text[len(free.text) // 2:][:2]
    assert middle.strip(), free.text
    specs = [(PROMPTS[0], 5, ()), (PROMPTS[1], 16, (middle,)), (PROMPTS[2], 11, ())]
    sinks = []
    for prompt, limit, stop in specs:
      sink = Collect()
      ids = served.fmt.encode_prompt([{"role": "user", "content": prompt}]).tolist()
      engine.submit(Job("tiny", ids, limit, sink, temperature=0, stop=stop))
      sinks.append((sink, ids, limit, stop))
    for sink, ids, limit, stop in sinks:
      assert sink.done.wait(120) and sink.error is None
      # Reference: the row alone through Generator.generate with its own stop strings, to 16 tokens (one program
      # for all rows); a row whose limit is lower ends with that run's first `limit` tokens.
      stops = served.fmt.template.stop_strings + stop
      [ref] = served.generator.generate([ids], SamplingConfig(max_new_tokens=16, temperature=0), stop_strings=stops)
      ids_ref, reason = ref.ids, {"eos": "stop", "stop": "stop", "length": "length"}[ref.finish_reason]
      text = ref.text
      if len(ids_ref) > limit:
        ids_ref, reason = ids_ref[:limit], "length"
        text = cut_at_stop(served.fmt.tokenizer.decode(ids_ref), stops)[0]
      assert sink.result.text == clean_answer(text, served.fmt.template)
      assert "".join(sink.deltas) == sink.result.text
      assert (sink.result.completion_tokens, sink.result.finish_reason) == (len(ids_ref), reason)
      assert sink.result.batch_size == 3
      if stop:
        assert reason == "stop"
    assert engine.stats["batches"] == 1
  finally:
    engine.stop()


def test_different_sampling_settings_are_not_batched_together(tiny_models):
  served = tiny_models["tiny"]
  engine = Engine(tiny_models, batch_window_s=0.5).start()
  try:
    ids = served.fmt.encode_prompt([{"role": "user", "content": PROMPTS[3]}]).tolist()
    sinks = [Collect() for _ in range(4)]
    engine.submit(Job("tiny", ids, 4, sinks[0], temperature=0))
    engine.submit(Job("tiny", ids, 4, sinks[1], temperature=0.8, top_p=0.9))
    engine.submit(Job("tiny", ids, 4, sinks[2], temperature=0))
    engine.submit(Job("tiny", ids, 4, sinks[3], temperature=0.8, top_p=0.9, seed=3))  # seeded: alone
    for s in sinks:
      assert s.done.wait(120) and s.error is None
    assert [s.result.batch_size for s in sinks] == [2, 1, 2, 1]
    assert sinks[0].result.text == sinks[2].result.text
  finally:
    engine.stop()


def test_a_cancelled_waiting_job_never_runs(tiny_models):
  served = tiny_models["tiny"]
  engine = Engine(tiny_models, batch_window_s=0.3).start()
  try:
    ids = served.fmt.encode_prompt([{"role": "user", "content": PROMPTS[4]}]).tolist()
    sink = Collect()
    job = engine.submit(Job("tiny", ids, 8, sink, temperature=0))
    job.cancelled.set()
    assert sink.done.wait(30)
    assert (sink.result.finish_reason, sink.result.completion_tokens, sink.deltas) == ("cancelled", 0, [])
    assert engine.stats["batches"] == 0
  finally:
    engine.stop()
