"""Training data for the trainer: Conversation JSONL (SFT) or plain text (pretraining) -> Grain batches.

    ds = sft_dataset(paths, ChatFormat(tokenizer), LoaderConfig(max_seq_len=1024, batch_size=32),
                     rejected_path="runs/x/rejected.jsonl")
    it = iter(ds)               # a grain DatasetIterator: it.get_state() is JSON, it.set_state() resumes exactly
    batch = next(it)            # dict of [B, L] int32: inputs targets loss_mask segment_ids positions
    it.stats.to_dict()          # examples, tokens, loss tokens, packing efficiency, rejected by reason ...
    steps = epochs * count_batches(paths, chat_format, cfg)

Records are encoded up front, once per process (and cached, so `count_batches` and `sft_dataset` share
the work): the rejected file is then written once, not once per epoch; the number of batches per epoch
is known before training; and the Grain state is a few integers. The arrays are compact (5 bytes a
token: a million conversations of 300 tokens take 1.5 GB). Encoding runs at ~1,000 conversations/s
on one core (the tokenizer's offsets dominate), so 100k records cost about 1.5 minutes at start-up.

Over-long records are handled here, before packing (a Grain packer raises mid-epoch on an element
longer than a row): `drop_oldest_turns` removes whole oldest (user, assistant) pairs until the record
fits `max_seq_len + 1` tokens (one is lost to the shift), `reject` rejects it (reason `too_long`).
Records that cannot become examples (malformed line, forged role marker, empty loss mask, too long)
go to `rejected_path` with their id and reason, and truncated ones with `"action": "truncated"`;
nothing is dropped silently.

Many hosts: every host encodes all records (so all hosts agree on the step count) and takes every
P-th example. Packing gives each host a different number of rows, and a host that runs out first
would hang the others in a collective, so the loader repeats (`num_epochs=None`) and the trainer stops
at `epochs * count_batches(...)` global steps, computed the same on every host.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from telugu_jax.chat_format import ChatFormat, ChatFormatError, TooLongError
from telugu_jax.data.packing import PACKERS, CorpusBuilder, EncodedCorpus, build_pipeline, count_rows
from telugu_jax.data.records import RecordError, decode_line, iter_jsonl, unicode_problem
from telugu_jax.errors import UserError
from telugu_jax.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OVER_LONG = ("drop_oldest_turns", "reject")
PathsLike = str | os.PathLike | Sequence[str | os.PathLike]


class DataError(UserError, ValueError):
  """Training data that cannot be used: no usable example at all (each record's reason is in `rejections`)."""

  def __init__(self, message: str, rejections: Sequence[dict] = ()):
    super().__init__(message)
    self.rejections = list(rejections)


class DataFileNotFound(UserError, FileNotFoundError):
  pass


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  max_seq_len: int = 1024           # row length L (tokens per row, after the shift)
  batch_size: int = 32              # GLOBAL rows per step; each process yields batch_size // process_count rows
  packing: bool = True
  num_packing_bins: int = 16        # rows filled at once; measured at L=1024: 1 bin 77-85%, 16 bins 92-97%, 64: 93-98%
  packing_algorithm: str = "best_fit"    # or "first_fit": best fit packed as tight or tighter on every mix measured
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None     # None: repeat forever (the trainer stops at a step count computed up front)
  over_long: str = "drop_oldest_turns"   # or "reject" (then too-long records are rejected with reason too_long)
  pad_to_multiple: int = 64         # no packing: pad to the batch's longest, rounded up to this (few shapes)

  def __post_init__(self):
    if self.over_long not in OVER_LONG:
      raise ValueError(f"over_long={self.over_long!r}; choose one of {OVER_LONG}")
    if self.packing_algorithm not in PACKERS:
      raise ValueError(f"packing_algorithm={self.packing_algorithm!r}; choose one of {sorted(PACKERS)}")
    for name in ("max_seq_len", "batch_size", "num_packing_bins", "pad_to_multiple"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    if self.num_epochs is not None and self.num_epochs < 1:
      raise ValueError(f"num_epochs must be None (repeat forever) or at least 1, got {self.num_epochs}")


# ---- records -> encoded corpus ------------------------------------------------------------------------

def _as_paths(paths: PathsLike) -> tuple[str, ...]:
  out = (os.fspath(paths),) if isinstance(paths, str | os.PathLike) else tuple(os.fspath(p) for p in paths)
  if not out:
    raise DataError("no data files given (config data.train)")
  missing = [p for p in out if not os.path.exists(p)]
  if missing:
    raise DataFileNotFound(f"data file(s) not found: {', '.join(missing)}; check data.train / data.validation "
                           "in the config (or --config.data.train=PATH)")
  from telugu_jax.data.stage import check_finished

  check_finished(out)  # records.jsonl of a data stage that did not finish: refuse it, as the next stage would
  return out


def _file_keys(paths: tuple[str, ...]) -> tuple:
  """Identity of the files' contents for the cache: a file rewritten since is encoded again."""
  return tuple((os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


def _finish(builder: CorpusBuilder, records: int, rejected: list[dict], truncated: list[dict],
            what: str) -> EncodedCorpus:
  by_reason = dict(Counter(r["reason"] for r in rejected))
  corpus = builder.build({"records": records, "rejected": by_reason, "truncated": len(truncated),
                          "dropped_turns": sum(t["dropped_turns"] for t in truncated)}, rejected + truncated)
  corpus.summary.update(corpus_examples=len(corpus), corpus_tokens=int(corpus.lengths().sum()),
                        corpus_loss_tokens=int(corpus.mask.sum()))
  if len(corpus) and (rejected or truncated):  # (with no example left, the error below says it all)
    log.warning("%s: %d of %d records rejected %s, %d truncated (oldest turns dropped); each one, with its id "
                "and reason, goes to sft_dataset's rejected_path", what, len(rejected), records, by_reason,
                len(truncated))
  if not len(corpus):
    if not records:
      raise DataError(f"{what}: no records at all (empty file?); check the data paths")
    raise DataError(f"{what}: no usable example in {records} record(s); rejected by reason: {by_reason}",
                    rejected + truncated)
  return corpus


@functools.lru_cache(maxsize=4)
def _sft_corpus(file_keys: tuple, chat_format: ChatFormat, max_seq_len: int, over_long: str) -> EncodedCorpus:
  builder, rejected, truncated, records = CorpusBuilder(), [], [], 0
  for path, _, _ in file_keys:
    def on_error(e: RecordError, line: str) -> None:
      nonlocal records
      records += 1
      rejected.append({"id": None, "where": e.where, "reason": e.reason, "action": "rejected",
                       "detail": str(e), "line": line.rstrip("\n")})

    for conv in iter_jsonl(path, on_error=on_error):
      records += 1
      entry = {"id": conv.id, "source": conv.source, "where": path}
      try:
        if over_long == "drop_oldest_turns":
          enc = chat_format.encode(conv, max_len=max_seq_len + 1)
        else:
          enc = chat_format.encode(conv)
          if len(enc.ids) > max_seq_len + 1:
            raise TooLongError(f"{len(enc.ids)} tokens; max_seq_len + 1 is {max_seq_len + 1} and over_long='reject'")
      except ChatFormatError as e:
        rejected.append({**entry, "reason": e.reason, "action": "rejected", "detail": str(e),
                         "record": conv.to_dict()})
        continue
      if enc.dropped_turns:
        truncated.append({**entry, "reason": "dropped_oldest_turns", "action": "truncated",
                          "dropped_turns": enc.dropped_turns})
      builder.add(conv.id, enc.ids, enc.loss_mask)
  return _finish(builder, records, rejected, truncated, f"sft data {', '.join(p for p, _, _ in file_keys)}")


def iter_documents(path: str) -> Iterator[tuple[int, str]]:
  """(first line number, text) of each document: runs of lines separated by blank lines. Bytes that are not
  UTF-8 are kept as U+DC80..U+DCFF (`unicode_problem` names them): the caller rejects that document."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    lines, start = [], 0
    for lineno, raw in enumerate(f, 1):
      line = decode_line(raw)
      if line.strip():
        if not lines:
          start = lineno
        lines.append(line.rstrip("\n"))
      elif lines:
        yield start, "\n".join(lines)
        lines = []
    if lines:
      yield start, "\n".join(lines)


@functools.lru_cache(maxsize=4)
def _text_corpus(file_keys: tuple, tokenizer: Tokenizer, max_seq_len: int) -> EncodedCorpus:
  builder, records, rejected = CorpusBuilder(), 0, []
  for path, _, _ in file_keys:
    for start, doc in iter_documents(path):
      records += 1
      if (why := unicode_problem(doc)) is not None:
        rejected.append({"id": None, "where": f"{path}:{start}", "reason": "invalid_unicode", "action": "rejected",
                         "detail": f"invalid Unicode ({why})"})
        continue
      ids = np.array([tokenizer.bos_id, *tokenizer.encode(doc), tokenizer.eos_id], np.int32)
      mask = np.ones_like(ids, np.int8)
      mask[0] = 0  # bos is never a target
      # Chunks of L + 1 tokens overlapping by one, so every (token, next token) pair is trained exactly
      # once; a tail of one token was already the last chunk's final target.
      name = f"{os.path.basename(path)}:{start}"
      for k, a in enumerate(range(0, max(len(ids) - 1, 1), max_seq_len)):
        builder.add(f"{name}#{k}" if len(ids) > max_seq_len + 1 else name, ids[a:a + max_seq_len + 1],
                    mask[a:a + max_seq_len + 1])
  return _finish(builder, records, rejected, [], f"pretraining text {', '.join(p for p, _, _ in file_keys)}")


def write_rejected(path: str | os.PathLike, corpus: EncodedCorpus) -> int:
  """Rejected and truncated records, one JSON object a line (atomic: temp file, then rename)."""
  return _write_entries(path, corpus.rejections)


def _write_entries(path: str | os.PathLike, entries: Sequence[dict]) -> int:
  from telugu_jax.data.stage import json_line  # a rejected record's text may not encode: escaped then

  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for e in entries:
      f.write(json_line(e))
  os.replace(path + ".tmp", path)
  return len(entries)


# ---- public API ------------------------------------------------------------------------------------------

def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # only here: importing the loader must not initialise JAX

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
  return process_index, process_count


def _rows_per_process(cfg: LoaderConfig, process_count: int) -> int:
  if cfg.batch_size % process_count:
    raise ValueError(f"batch_size {cfg.batch_size} is global and must divide evenly over {process_count} "
                     "processes; change batch_size")
  return cfg.batch_size // process_count


def _pipeline_kw(cfg: LoaderConfig, pad_id: int, shard: tuple[int, int], *, warn: bool = False) -> dict[str, Any]:
  # Validation passes (num_epochs=1, no shuffling) are fine: train.core.evaluate_dataset pads ended shards.
  if warn and shard[1] > 1 and cfg.num_epochs is not None and cfg.shuffle and shard[0] == 0:
    log.warning("num_epochs=%d with %d processes: packed shards end after different numbers of batches, and a "
                "host that runs out first leaves the others waiting in a collective. Prefer num_epochs=None and "
                "stop at epochs * count_batches(...) steps.", cfg.num_epochs, shard[1])
  return dict(shard=shard, rows=_rows_per_process(cfg, shard[1]), max_seq_len=cfg.max_seq_len,
              packing=cfg.packing, packing_algorithm=cfg.packing_algorithm, num_packing_bins=cfg.num_packing_bins,
              shuffle=cfg.shuffle, seed=cfg.seed, num_epochs=cfg.num_epochs, pad_to_multiple=cfg.pad_to_multiple,
              pad_id=pad_id)


def sft_corpus(paths: PathsLike, chat_format: ChatFormat, cfg: LoaderConfig) -> EncodedCorpus:
  """All records of `paths` encoded (cached per files, chat format, max_seq_len and over-long policy)."""
  return _sft_corpus(_file_keys(_as_paths(paths)), chat_format, cfg.max_seq_len, cfg.over_long)


def text_corpus(paths: PathsLike, tokenizer: Tokenizer, cfg: LoaderConfig) -> EncodedCorpus:
  return _text_corpus(_file_keys(_as_paths(paths)), tokenizer, cfg.max_seq_len)


def sft_dataset(paths: PathsLike, chat_format: ChatFormat, cfg: LoaderConfig, *, process_index: int | None = None,
                process_count: int | None = None, rejected_path: str | os.PathLike | None = None
                ) -> grain.IterDataset:
  """Conversation JSONL -> encode -> shift per example -> pack -> batches of this process's rows.

  `rejected_path` receives every rejected or truncated record (written by process 0 only: every process
  sees all records). `iter(ds).stats` counts what the iterator yielded.
  """
  shard = _process(process_index, process_count)
  corpus = _with_rejected(lambda: sft_corpus(paths, chat_format, cfg), rejected_path, shard)
  return build_pipeline(corpus, **_pipeline_kw(cfg, chat_format.tokenizer.pad_id, shard, warn=True))


def _with_rejected(make: Any, rejected_path: str | os.PathLike | None, shard: tuple[int, int]) -> EncodedCorpus:
  """`make()`'s corpus, its rejections written to `rejected_path` (by process 0), also when no example is left."""
  try:
    corpus = make()
  except DataError as e:
    if rejected_path is None or not e.rejections:
      raise
    if shard[0] == 0:
      _write_entries(rejected_path, e.rejections)
    raise DataError(f"{e}; each record and why: {os.fspath(rejected_path)}", e.rejections) from None
  if rejected_path is not None and shard[0] == 0:
    write_rejected(rejected_path, corpus)
  return corpus


def pretrain_dataset(paths: PathsLike, tokenizer: Tokenizer, cfg: LoaderConfig, *, process_index: int | None = None,
                     process_count: int | None = None, rejected_path: str | os.PathLike | None = None
                     ) -> grain.IterDataset:
  """Plain UTF-8 text (documents separated by blank lines; `.gz` too): each document is bos + ids + eos,
  long ones cut into chunks of max_seq_len + 1 tokens; loss on every token; packed like SFT."""
  shard = _process(process_index, process_count)
  corpus = _with_rejected(lambda: text_corpus(paths, tokenizer, cfg), rejected_path, shard)
  return build_pipeline(corpus, **_pipeline_kw(cfg, tokenizer.pad_id, shard, warn=True))


def batches_per_epoch(corpus: EncodedCorpus, cfg: LoaderConfig, pad_id: int, process_count: int | None = None) -> int:
  """Global steps for one epoch: the most any process needs to see its whole shard once (packing, each
  shard's rows counted with the first epoch's order; later epochs reshuffle and differ by a few rows,
  which the repeating loader absorbs). The same on every host: it depends on all shards, not one."""
  if process_count is None:
    _, process_count = _process(None, None)
  rows = _rows_per_process(cfg, process_count)
  return max(math.ceil(count_rows(corpus, **_pipeline_kw(cfg, pad_id, (p, process_count))) / rows)
             for p in range(process_count))


def count_batches(paths: PathsLike, chat_format: ChatFormat, cfg: LoaderConfig, *,
                  process_count: int | None = None) -> int:
  """Global batches in one epoch of SFT data (`total_steps = epochs * count_batches(...)`)."""
  return batches_per_epoch(sft_corpus(paths, chat_format, cfg), cfg, chat_format.tokenizer.pad_id, process_count)


def count_pretrain_batches(paths: PathsLike, tokenizer: Tokenizer, cfg: LoaderConfig, *,
                           process_count: int | None = None) -> int:
  return batches_per_epoch(text_corpus(paths, tokenizer, cfg), cfg, tokenizer.pad_id, process_count)
