"""Pair encoding: the response mask is exactly the final answer + its end token; over-long handling; batches."""

import dataclasses

import numpy as np
import pytest

from telugu_jax.chat_format import ChatFormat, TooLongError
from telugu_jax.dpo.data import PairLoaderConfig, encode_pair, pair_corpus, pair_dataset
from telugu_jax.dpo.records import make_pair, write_pairs

SINGLE = make_pair("d/1", "t", [("user", "భారతదేశ రాజధాని ఏది?")], "భారతదేశ రాజధాని న్యూఢిల్లీ.",
                   "రాజధాని రాజధాని రాజధాని రాజధాని.", "")
MULTI = make_pair("d/2", "t", [("user", "మీ పేరు ఏమిటి?"), ("assistant", "నా పేరు సీత."),
                               ("user", "ఒక చిన్న కవిత రాయండి.")],
                  "వాన చినుకులు నేలను తాకాయి, పొలాలు పచ్చగా నవ్వాయి.", "వాన.", "")


@pytest.fixture(scope="module")
def fmt(sp_tokenizer):
  return ChatFormat(sp_tokenizer)


@pytest.mark.parametrize("pair", [SINGLE, MULTI], ids=["single", "multi-turn"])
def test_mask_is_exactly_the_final_answer_and_eos(fmt, pair):
  tok = fmt.tokenizer
  enc = encode_pair(fmt, pair)
  prompt_ids = fmt.encode_prompt(pair.prompt)  # what inference feeds the model
  for side, ids, mask in (("chosen", enc.chosen, enc.chosen_mask), ("rejected", enc.rejected, enc.rejected_mask)):
    answer = getattr(pair, side)
    p = len(prompt_ids)
    np.testing.assert_array_equal(ids[:p], prompt_ids)
    # Everything after the prompt, and nothing before it, is scored: " " + answer, then eos.
    np.testing.assert_array_equal(mask, (np.arange(len(ids)) >= p).astype(np.int32))
    assert tok.decode(ids[p:-1].tolist()) == " " + answer and ids[-1] == tok.eos_id
    # The SFT loss mask of the same conversation also covers the history's answers; the DPO mask does not.
    sft_mask = fmt.encode(pair.turns(side)).loss_mask
    assert (sft_mask[:p].sum() > 0) == (len(pair.prompt) > 1)


def test_over_long_drops_old_turns_then_rejects_or_truncates(fmt):
  full = encode_pair(fmt, MULTI)
  last_only = encode_pair(fmt, dataclasses.replace(MULTI, prompt=MULTI.prompt[2:]))
  limit = max(len(last_only.chosen), len(last_only.rejected))
  assert max(len(full.chosen), len(full.rejected)) > limit
  shortened = encode_pair(fmt, MULTI, max_len=limit)
  assert shortened.dropped_turns == 2
  np.testing.assert_array_equal(shortened.chosen, last_only.chosen)
  np.testing.assert_array_equal(shortened.rejected, last_only.rejected)
  with pytest.raises(TooLongError):
    encode_pair(fmt, MULTI, max_len=limit - 1)
  cut = encode_pair(fmt, MULTI, max_len=limit - 3, over_long="truncate")
  assert cut.truncated and len(cut.chosen) == limit - 3 and cut.chosen[-1] != fmt.tokenizer.eos_id
  np.testing.assert_array_equal(cut.chosen, last_only.chosen[:limit - 3])


def test_batches_hold_chosen_then_rejected_and_empty_padding_rows(fmt, tmp_path):
  long_pair = make_pair("d/3", "t", [("user", "పొడవైన ప్రశ్న " * 40)], "జవాబు.", "కాదు.", "")
  path = tmp_path / "pairs.jsonl"
  write_pairs(path, [SINGLE, MULTI, long_pair])
  corpus = pair_corpus([str(path)], fmt, max_seq_len=64)
  assert corpus.ids == ("d/1", "d/2") and corpus.summary["rejected"] == {"too_long": 1}
  assert corpus.rejections[0]["id"] == "d/3" and corpus.rejections[0]["record"]["chosen"] == "జవాబు."
  cfg = PairLoaderConfig(max_seq_len=64, batch_size=3, shuffle=False, num_epochs=1)
  [batch] = list(pair_dataset(corpus, cfg, fmt.tokenizer.pad_id))
  assert all(v.shape == (3, 2, 64) for v in batch.values())
  for r, pair in enumerate((SINGLE, MULTI)):
    enc = encode_pair(fmt, pair, max_len=65)
    for s, (ids, mask) in enumerate(((enc.chosen, enc.chosen_mask), (enc.rejected, enc.rejected_mask))):
      n = len(ids) - 1  # targets are shifted per row: inputs ids[:-1], targets ids[1:], mask at the target
      np.testing.assert_array_equal(batch["inputs"][r, s, :n], ids[:-1])
      np.testing.assert_array_equal(batch["targets"][r, s, :n], ids[1:])
      np.testing.assert_array_equal(batch["loss_mask"][r, s, :n], mask[1:])
      np.testing.assert_array_equal(batch["positions"][r, s, :n], np.arange(n))
      assert batch["segment_ids"][r, s, :n].all() and not batch["segment_ids"][r, s, n:].any()
  assert not batch["loss_mask"][2].any() and not batch["segment_ids"][2].any()  # a padding pair

  with_ref = dataclasses.replace(corpus, ref_logps=np.array([[-1.0, -2.0], [-3.0, -4.0]], np.float32))
  [batch] = list(pair_dataset(with_ref, cfg, fmt.tokenizer.pad_id))
  np.testing.assert_array_equal(batch["ref_logps"], [[-1, -2], [-3, -4], [0, 0]])
