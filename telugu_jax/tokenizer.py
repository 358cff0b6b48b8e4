"""One tokenizer interface over a sentencepiece `.model` and a Hugging Face `tokenizer.json`.

The chat format needs more than ids: it takes the loss mask from token *offsets* (the character where
each token starts), so both backends expose `encode_with_offsets`. Special tokens are never produced
by `encode` on plain text; callers add bos/eos ids themselves.

Tokenizers this project trains (`train_sentencepiece`) use identity normalisation, keep whitespace
and use byte fallback: the default `nmt_nfkc` rules turn `\\n` and ZWNJ (U+200C) into spaces, so
`decode(encode(text))` would not give the text back and the `\\nuser:` stop string could never fire.
`python -m telugu_jax.tokenizer inspect PATH` reports what a tokenizer (yours, or a base's) does to Telugu text
and to the chat template (telugu_jax/tokenizer_check.py).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from telugu_jax.errors import UserError


class TokenizerError(UserError, ValueError):
  """A tokenizer that is missing, unreadable or does not fit the model: the message names the file."""


class Tokenizer(Protocol):
  vocab_size: int
  bos_id: int
  eos_id: int
  pad_id: int

  def encode(self, text: str) -> list[int]: ...

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
    """Token ids and, for each, the index of the character where it starts."""
    ...

  def decode(self, ids: Sequence[int]) -> str: ...


class SentencePieceTokenizer:
  """A sentencepiece model (`.model` file or serialized proto bytes)."""

  def __init__(self, model: str | os.PathLike | bytes):
    import sentencepiece as spm

    self.path = None if isinstance(model, bytes) else os.fspath(model)
    if isinstance(model, bytes):
      self.sp = spm.SentencePieceProcessor(model_proto=model)
    else:
      if not os.path.exists(model):
        raise TokenizerError(f"sentencepiece model not found: {model}")
      try:
        self.sp = spm.SentencePieceProcessor(model_file=os.fspath(model))
      except (RuntimeError, OSError) as e:  # sentencepiece: "could not parse ModelProto" for a cut-short file
        raise TokenizerError(f"{model}: not a readable sentencepiece model ({str(e).splitlines()[0][:200]}); the "
                             "file is truncated or corrupt: copy it again from the model it belongs to") from None
    self.vocab_size = self.sp.get_piece_size()
    self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
    if self.bos_id < 0 or self.eos_id < 0:
      raise TokenizerError(
          f"tokenizer {self.path or '<bytes>'} lacks a bos or eos token (bos={self.bos_id}, eos={self.eos_id}); "
          "the chat format needs both: train it with bos_id/eos_id set")
    self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
    self._special = {self.bos_id, self.eos_id, self.pad_id}

  def encode(self, text: str) -> list[int]:
    return list(self.sp.encode(text))

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
    proto = self.sp.encode(text, return_type="proto")
    # Offsets come as UTF-8 byte positions; map them to characters: a byte starts a character unless it
    # is a continuation byte (10xxxxxx). Byte-fallback pieces of one character all start at its first byte.
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    byte_to_char = np.append(np.cumsum((raw & 0xC0) != 0x80) - 1, len(text))
    ids = [p.id for p in proto.pieces]
    starts = byte_to_char[[p.begin for p in proto.pieces]].tolist() if ids else []
    return ids, starts

  def decode(self, ids: Sequence[int]) -> str:
    return self.sp.decode([int(i) for i in ids if int(i) not in self._special])

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))

  def save(self, directory: str | os.PathLike) -> str:
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, "tokenizer.model")
    with open(out, "wb") as f:
      f.write(self.sp.serialized_model_proto())
    return out


_BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "[BOS]")
_EOS_NAMES = ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "[EOS]")


class HFTokenizer:
  """A Hugging Face fast tokenizer from `tokenizer.json` (bos/eos read from `tokenizer_config.json`
  beside it when present, else found among the usual names, else given explicitly)."""

  def __init__(self, path: str | os.PathLike, bos: str | None = None, eos: str | None = None,
               pad: str | None = None):
    from tokenizers import Tokenizer as _Tok

    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
      raise TokenizerError(f"tokenizer.json not found: {file}")
    self.path = file
    try:
      self.tok = _Tok.from_file(file)
    except Exception as e:  # noqa: BLE001 -- the tokenizers library raises a bare Exception for a bad file
      raise TokenizerError(f"{file}: not a readable tokenizer.json ({str(e).splitlines()[0][:200]}); the file is "
                           "truncated or corrupt: copy it again from the model it belongs to") from None
    cfg = {}
    cfg_file = os.path.join(os.path.dirname(file), "tokenizer_config.json")
    if os.path.exists(cfg_file):
      try:
        with open(cfg_file, encoding="utf-8") as f:
          cfg = json.load(f)
      except ValueError as e:
        raise TokenizerError(f"{cfg_file}: not valid JSON ({e}); fix or copy it again") from None

    def token_name(value):
      return value.get("content") if isinstance(value, dict) else value

    bos = bos or token_name(cfg.get("bos_token"))
    eos = eos or token_name(cfg.get("eos_token"))
    pad = pad or token_name(cfg.get("pad_token"))
    vocab = self.tok.get_vocab(with_added_tokens=True)
    bos = bos or next((n for n in _BOS_NAMES if n in vocab), None)
    eos = eos or next((n for n in _EOS_NAMES if n in vocab), None)
    if bos not in vocab or eos not in vocab:
      raise TokenizerError(
          f"tokenizer {file} lacks a bos or eos token (bos={bos!r}, eos={eos!r}); the chat format needs "
          "both: name them in tokenizer_config.json (bos_token/eos_token) or pass bos=/eos=")
    self.bos_id, self.eos_id = vocab[bos], vocab[eos]
    self.pad_id = vocab[pad] if pad in vocab else self.eos_id
    self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
    self._special = {self.bos_id, self.eos_id, self.pad_id}

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
    enc = self.tok.encode(text, add_special_tokens=False)
    return list(enc.ids), [start for start, _ in enc.offsets]

  def decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode([int(i) for i in ids if int(i) not in self._special], skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self.tok.id_to_token(int(i))

  def save(self, directory: str | os.PathLike) -> str:
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, "tokenizer.json")
    self.tok.save(out)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
      json.dump({"bos_token": self.id_to_piece(self.bos_id), "eos_token": self.id_to_piece(self.eos_id),
                 "pad_token": self.id_to_piece(self.pad_id)}, f, ensure_ascii=False, indent=1)
    return out


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
  """A directory holding `tokenizer.model` or `tokenizer.json`, or one of those files."""
  path = os.fspath(path)
  if os.path.isdir(path):
    for name, cls in (("tokenizer.model", SentencePieceTokenizer), ("tokenizer.json", HFTokenizer)):
      if os.path.exists(os.path.join(path, name)):
        return cls(os.path.join(path, name))
    raise TokenizerError(f"no tokenizer.model or tokenizer.json in {path}")
  if path.endswith(".json"):
    return HFTokenizer(path)
  if path.endswith(".model"):
    return SentencePieceTokenizer(path)
  raise TokenizerError(f"cannot tell the tokenizer type of {path}: give a .model or tokenizer.json file")


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
  """The tokenizer may be smaller than the embedding table (padded vocabularies), never larger."""
  if tokenizer.vocab_size > model_vocab_size:
    raise TokenizerError(
        f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding table has "
        f"{model_vocab_size} rows: ids past {model_vocab_size - 1} would index out of range. "
        "Use the tokenizer the model was trained with.")


def train_sentencepiece_defaults(texts: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
  """A sentencepiece model with the trainer's defaults (unigram, `nmt_nfkc`, dummy prefix, no byte fallback,
  character coverage 0.9995), as many published Telugu tokenizers are: for tests and the inspect tool's
  examples of a tokenizer that cannot write `\n`. Ids: unk=0, bos=1, eos=2, no pad."""
  import sentencepiece as spm

  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size,
                                 hard_vocab_limit=False, num_threads=2, minloglevel=2)
  return SentencePieceTokenizer(buf.getvalue())


def train_sentencepiece(texts: Iterable[str], vocab_size: int, *, model_type: str = "bpe",
                        user_defined_symbols: Sequence[str] = ("\n",), seed_sentencepiece_size: int = 100000,
                        max_sentence_length: int = 16384) -> SentencePieceTokenizer:
  """Train a sentencepiece model with the settings the chat format needs (see module docstring).

  Ids: unk=0, bos=1, eos=2, pad=3. Digits are split so numbers tokenise uniformly.
  """
  import sentencepiece as spm

  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
      normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
      byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
      user_defined_symbols=list(user_defined_symbols), unk_id=0, bos_id=1, eos_id=2, pad_id=3,
      seed_sentencepiece_size=seed_sentencepiece_size, max_sentence_length=max_sentence_length,
      num_threads=2, minloglevel=2)
  return SentencePieceTokenizer(buf.getvalue())


if __name__ == "__main__":  # python -m telugu_jax.tokenizer inspect PATH (telugu_jax/tokenizer_check.py)
  import sys

  from telugu_jax.tokenizer_check import main

  sys.exit(main())
