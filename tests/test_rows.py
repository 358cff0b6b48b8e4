"""The row tracker's host-side pieces: incremental detokenisation equals decoding the whole row after every
token (sentencepiece with byte fallback, byte-level BPE), the incremental answer cleaner streams only
what `clean_answer` of the whole answer keeps, and the tracker ends rows at stop strings, limits, eos and
cancellation, streaming pieces that join to the final text."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate, clean_answer
from telugu_jax.rows import AnswerCleaner, Detokenizer, RowSpec, RowTracker, cut_at_stop, holdback
from tests.conftest import TELUGU_SENTENCES

# Letters and symbols the test tokenizers never saw (byte fallback: 3- and 4-byte UTF-8 sequences spelled
# one byte-piece at a time), runs of spaces and a role marker at a line start.
RARE = " ఋషి ౘ 🙂 café  \n  user: x ఽ\n\nassistant:  "


def _text() -> str:
  return " ".join(TELUGU_SENTENCES) + RARE


@pytest.fixture(params=["sentencepiece", "byte_level_bpe"])
def tokenizer(request, sp_tokenizer, hf_tokenizer_dir):
  if request.param == "sentencepiece":
    return sp_tokenizer
  from telugu_jax.tokenizer import HFTokenizer

  return HFTokenizer(hf_tokenizer_dir)


def test_detokenizer_equals_full_decode_after_every_token(tokenizer):
  ids = tokenizer.encode(_text())
  if tokenizer.__class__.__name__ == "SentencePieceTokenizer":
    assert any(tokenizer.id_to_piece(i).startswith("<0x") for i in ids), "the text must need byte fallback"
  d = Detokenizer(tokenizer)
  pieces = []
  for n, i in enumerate(ids, 1):
    pieces.append(d.push(i))
    assert d.text == tokenizer.decode(ids[:n]), n
    assert not pieces[-1].endswith("\ufffd")  # never gives out half a character
  pieces.append(d.flush())
  assert "".join(pieces) == d.text == tokenizer.decode(ids)
  assert len(d._window_text) < 40  # the window restarts: it never grows with the row


def test_detokenizer_flushes_an_unfinished_character_as_a_full_decode_does(sp_tokenizer):
  ids = sp_tokenizer.encode("ఋ")[:2]  # two of its three byte pieces
  d = Detokenizer(sp_tokenizer)
  assert [d.push(i) for i in ids] == ["", ""]
  assert d.flush() == sp_tokenizer.decode(ids) and "\ufffd" in d.text


RAW = " నమస్కారం,  మీకు\n  assist ఏమి కావాలి?\nassistant: అవును\nuser: ఇంకొకటి"


@pytest.mark.parametrize("template", [DEFAULT_TEMPLATE, ChatTemplate(user="User:", assistant="Bot:", turn_sep="\n\n")])
@pytest.mark.parametrize("raw", [RAW, "  \n user:x", "చాలా బాగుంది   ", "\n\nUSER: a\n assistant", "a\nuse\nusex\n"])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_cleaner_streams_a_prefix_of_clean_answer_and_nothing_it_would_take_back(raw, template, chunk):
  raw = raw.replace("\n", template.turn_sep).replace("user:", template.user).replace("assistant:", template.assistant)
  final = clean_answer(raw, template)
  c, shown = AnswerCleaner(template), ""
  for start in range(0, len(raw), chunk):
    shown += c.feed(raw[start:start + chunk])
    assert final.startswith(shown), (start, shown, final)
    # Everything up to the current line's start is out (minus trailing whitespace): holding back is local.
    done = clean_answer(raw[:start + chunk].rsplit(template.turn_sep, 1)[0], template)
    if template.turn_sep in raw[:start + chunk]:
      assert shown.startswith(done.rstrip()) or not done.strip(), (shown, done)
  assert template.turn_sep + template.assistant not in final


def test_stop_text_helpers():
  assert cut_at_stop("సరే.\nuser: hi\nuser:", ["\nuser:"]) == ("సరే.", True)
  assert cut_at_stop("సరే.", ["\nuser:"]) == ("సరే.", False)
  assert holdback("సరే.", ["\nuser:"]) == 0
  assert holdback("సరే.\nus", ["\nuser:"]) == 3
  assert holdback("ab\ufffd\ufffd", []) == 2


def _feed(tracker: RowTracker, rows_ids: list[list[int]], eos: int) -> int:
  """Drive the tracker as the decode loop does; returns the number of steps run."""
  done = np.zeros(tracker.batch, bool)
  for step in range(tracker.max_steps):
    tok = np.array([ids[step] if step < len(ids) else eos for ids in rows_ids], np.int32)
    stop = tracker(tok, np.int32(step), done)
    done = done | stop | (tok == eos)
    if done.all():
      return step + 1
  return tracker.max_steps


def test_tracker_rows_end_at_their_own_stop_limit_eos_or_cancel(sp_tokenizer):
  tok, eos = sp_tokenizer, sp_tokenizer.eos_id
  answer = " నేను ఉదయం ఆరు గంటలకు నిద్ర లేస్తాను.\nuser: మీ పేరు ఏమిటి?"
  ids = tok.encode(answer)
  cancel = threading.Event()
  streamed = [[] for _ in range(5)]
  specs = [RowSpec(stops=DEFAULT_TEMPLATE.stop_strings),                  # the template's stop string
           RowSpec(stops=("ఆరు",)),                                        # its own stop string
           RowSpec(max_tokens=5),                                          # its own limit
           RowSpec(cancelled=cancel),
           RowSpec()]                                                      # eos
  for spec, out in zip(specs, streamed, strict=True):
    spec.on_text = out.append
  rows_ids = [ids, ids, ids, ids, ids[:6] + [eos]]

  class CancelAt:  # the client leaves after the 3rd step
    def __init__(self, tracker):
      self.tracker = tracker

    def __call__(self, tok_b, step, done_b):
      if int(step) == 3:
        cancel.set()
      return self.tracker(tok_b, step, done_b)

  tracker = RowTracker(tok, specs, batch=8, eos_id=eos, max_steps=len(ids) + 2)
  done = np.zeros(8, bool)
  hook = CancelAt(tracker)
  for step in range(len(ids) + 2):
    t = np.array([r[step] if step < len(r) else eos for r in rows_ids] + [0] * 3, np.int32)
    done = done | hook(t, np.int32(step), done)
    assert done[5:].all()  # padding rows end at the first step
  r = tracker.rows
  assert (r[0].reason, r[0].text) == ("stop", answer.split("\nuser:")[0])
  assert (r[1].reason, r[1].text) == ("stop", " నేను ఉదయం ")
  assert (r[2].reason, r[2].ids, r[2].text) == ("length", ids[:5], tok.decode(ids[:5]))
  assert (r[3].reason, len(r[3].ids)) == ("cancelled", 3)
  assert (r[4].reason, r[4].ids[-1], r[4].text) == ("eos", eos, tok.decode(ids[:6]))
  for row, out in zip(r, streamed, strict=True):
    assert "".join(out) == row.sent
    if row.reason != "cancelled":
      assert row.sent == row.text  # streamed pieces join to the final text
  assert "\n" not in "".join(streamed[0])[len(r[0].text):]


def test_tracker_with_a_template_streams_the_cleaned_answer(sp_tokenizer):
  tok, eos = sp_tokenizer, sp_tokenizer.eos_id
  raw = " నమస్కారం  \n  assistant: అవును  \nuser: ఇంకొకటి"
  ids = tok.encode(raw)
  out: list[str] = []
  tracker = RowTracker(tok, [RowSpec(stops=DEFAULT_TEMPLATE.stop_strings, on_text=out.append)], batch=1, eos_id=eos,
                       max_steps=len(ids) + 1, template=DEFAULT_TEMPLATE)
  _feed(tracker, [ids], eos)
  row = tracker.rows[0]
  assert row.reason == "stop"
  assert row.answer == clean_answer(cut_at_stop(raw, DEFAULT_TEMPLATE.stop_strings)[0], DEFAULT_TEMPLATE)
  assert "".join(out) == row.answer == "నమస్కారం  \n  assistant : అవును"
  assert len(out) > 2  # streamed as it came, not in one piece at the end
