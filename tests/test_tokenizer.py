"""Tokenizers: sentencepiece and HF tokenizer.json behind one interface."""

import io

import pytest
import sentencepiece as spm

from telugu_jax.tokenizer import HFTokenizer, SentencePieceTokenizer, TokenizerError, check_vocab, load_tokenizer
from tests.conftest import TELUGU_SENTENCES

TEXT = "తెలుగు భాష చాలా మధురమైన భాష.\nకంప్యూటర్‌లో  రెండు\tఖాళీలు, 2024 సంవత్సరం!"


def test_sentencepiece_round_trip_and_ids(sp_tokenizer, tmp_path):
  tok = sp_tokenizer
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
  ids = tok.encode(TEXT)
  assert tok.decode(ids) == TEXT  # \n, ZWNJ, double space and tab survive
  assert tok.bos_id not in ids and tok.eos_id not in ids
  # Telugu is tokenised into learned pieces, not bytes: far fewer tokens than UTF-8 bytes.
  assert len(ids) < len(TEXT.encode()) / 3
  # Saved and reloaded through the generic loader: same ids.
  tok.save(tmp_path)
  again = load_tokenizer(tmp_path)
  assert isinstance(again, SentencePieceTokenizer) and again.encode(TEXT) == ids


@pytest.mark.parametrize("which", ["sp", "hf"])
def test_offsets_point_at_token_starts(which, sp_tokenizer, hf_tokenizer_dir):
  tok = sp_tokenizer if which == "sp" else load_tokenizer(hf_tokenizer_dir)
  ids, starts = tok.encode_with_offsets(TEXT)
  assert ids == tok.encode(TEXT)
  assert starts[0] == 0 and starts == sorted(starts) and max(starts) < len(TEXT)
  # Decoding the tokens that start before each boundary gives exactly the text up to it.
  boundaries = sorted(set(starts))
  for b in boundaries[1:]:
    n = sum(1 for s in starts if s < b)
    assert tok.decode(ids[:n]) == TEXT[:b]


def test_hf_tokenizer_json(hf_tokenizer_dir):
  tok = load_tokenizer(hf_tokenizer_dir)
  assert isinstance(tok, HFTokenizer)
  assert tok.id_to_piece(tok.bos_id) == "<s>" and tok.id_to_piece(tok.eos_id) == "</s>"
  for s in TELUGU_SENTENCES[:5] + [TEXT]:
    assert tok.decode(tok.encode(s)) == s


def test_missing_bos_eos_is_a_clear_error(tmp_path):
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(TELUGU_SENTENCES * 4), model_writer=buf,
                                 vocab_size=340, bos_id=-1, eos_id=-1, byte_fallback=True,
                                 character_coverage=1.0, minloglevel=2)
  with pytest.raises(TokenizerError, match="lacks a bos or eos"):
    SentencePieceTokenizer(buf.getvalue())


def test_vocab_larger_than_model_is_an_error(sp_tokenizer):
  check_vocab(sp_tokenizer, 512)
  with pytest.raises(TokenizerError, match="embedding table has 97 rows"):
    check_vocab(sp_tokenizer, 97)


def test_unknown_path():
  with pytest.raises(TokenizerError, match="not found"):
    load_tokenizer("/nonexistent/tokenizer.model")
