"""Encoded examples -> Grain pipeline of shifted, packed (or padded) batches, with running statistics.

This is the corpus-agnostic half of the loader (`loader.py` turns conversations or plain text into an
`EncodedCorpus` and calls `build_pipeline`):

    EncodedCorpus --[p::P] shard--> shuffle(seed) --> repeat(epochs) --> pack rows of L --> batch --> stats

- Targets are shifted *per example*, in `EncodedCorpus.__getitem__`, before packing: an example's last
  token never learns to predict the next example's first (Flax gemma shifts after packing and does).
- `.shuffle(seed)` before `.repeat(n)`: Grain folds the epoch into the seed, so each epoch has a new
  order and epochs are not mixed before packing.
- Packing is Grain's own (`FirstFitPackIterDataset` / `BestFitPackIterDataset`). Its packers emit
  `<feature>_segment_ids` and `<feature>_positions` for every feature not named a meta feature, so
  `targets` and `loss_mask` are meta features and `inputs_*` become the row's `segment_ids`/`positions`
  (segment ids 1..k per row, 0 = padding; positions restart at 0 per example). An element longer than
  a row raises mid-epoch inside Grain, so the over-long policy runs before (in `loader.py`).
- Without packing a batch is padded to its longest example rounded up to `pad_to_multiple`: few shapes,
  few compiles. A final partial batch (finite epochs only) gets empty rows so the batch size stays fixed.
- The last stage counts what it yields (`LoaderStats`) and warns on a batch whose loss mask is all zero.
  Its counters are part of the iterator state, so a resumed run continues them.

Element: dict of numpy arrays, all [B, T] int32: inputs, targets, loss_mask (0/1), segment_ids, positions
(T = max_seq_len with packing; with padding the batch's bucket).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

log = logging.getLogger(__name__)

FEATURES = ("inputs", "targets", "loss_mask")
BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")
PACKERS = {"first_fit": grain.experimental.FirstFitPackIterDataset,
           "best_fit": grain.experimental.BestFitPackIterDataset}


@dataclasses.dataclass
class EncodedCorpus:
  """Encoded examples back to back in flat arrays (one array per field, not one small array per example:
  a tenth of the memory and no per-example Python objects). A random-access Grain source."""

  tokens: np.ndarray      # [N] int32: each example's ids (bos ... eos), concatenated
  mask: np.ndarray        # [N] int8: 1 where the token is a training target
  offsets: np.ndarray     # [n + 1] int64: example i is tokens[offsets[i]:offsets[i + 1]]
  ids: tuple[str, ...]    # [n] example ids (record id, plus "#k" for the k-th chunk of a long document)
  summary: dict[str, Any] = dataclasses.field(default_factory=dict)  # records, rejected, truncated (loader.py)
  rejections: list[dict] = dataclasses.field(default_factory=list)   # rejected and truncated records, with reasons

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    a, b = int(self.offsets[i]), int(self.offsets[i + 1])
    ids = self.tokens[a:b]
    return {"inputs": ids[:-1], "targets": ids[1:], "loss_mask": self.mask[a + 1:b].astype(np.int32)}

  def lengths(self) -> np.ndarray:
    """[n] tokens per example after the shift (what a row holds)."""
    return np.diff(self.offsets) - 1


class CorpusBuilder:
  """Collects examples into an `EncodedCorpus` (chunks joined once at the end, not per example)."""

  def __init__(self):
    self._tokens, self._masks, self._lengths, self._ids = [], [], [0], []

  def add(self, example_id: str, ids: np.ndarray, mask: np.ndarray) -> None:
    if len(ids) < 2:
      raise ValueError(f"example {example_id!r} has {len(ids)} token(s); it needs 2 to make one target")
    self._tokens.append(np.asarray(ids, np.int32))
    self._masks.append(np.asarray(mask, np.int8))
    self._lengths.append(len(ids))
    self._ids.append(example_id)

  def build(self, summary: dict[str, Any], rejections: list[dict]) -> EncodedCorpus:
    cat = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)
    return EncodedCorpus(cat(self._tokens, np.int32), cat(self._masks, np.int8),
                         np.cumsum(self._lengths, dtype=np.int64), tuple(self._ids), summary, rejections)


# ---- batches ---------------------------------------------------------------------------------------

def collate(elements: Sequence[dict[str, np.ndarray]], *, rows: int, max_len: int, pad_to_multiple: int,
            pad_id: int, packed: bool) -> dict[str, np.ndarray]:
  """Stack packed rows, or pad single examples to the bucket of the longest; fill up to `rows` rows."""
  if packed:
    width = max_len
  else:
    longest = max(len(e["inputs"]) for e in elements)
    width = min(max_len, -(-longest // pad_to_multiple) * pad_to_multiple)
  out = {k: np.full((rows, width), pad_id if k in ("inputs", "targets") else 0, np.int32) for k in BATCH_KEYS}
  for r, e in enumerate(elements):
    if packed:
      for k in FEATURES:
        out[k][r] = e[k]
      out["segment_ids"][r] = e["inputs_segment_ids"]
      out["positions"][r] = e["inputs_positions"]
    else:
      n = len(e["inputs"])
      for k in FEATURES:
        out[k][r, :n] = e[k]
      out["segment_ids"][r, :n] = 1
      out["positions"][r, :n] = np.arange(n, dtype=np.int32)
  return out


@dataclasses.dataclass
class LoaderStats:
  """What the loader read (`corpus`, fixed when built) and what this iterator has yielded so far."""

  corpus: dict[str, Any] = dataclasses.field(default_factory=dict)
  batches: int = 0
  rows: int = 0
  slots: int = 0              # rows * row length: what the accelerator computes on
  examples: int = 0           # packed examples (segments)
  tokens: int = 0             # real (non-padding) input tokens
  loss_tokens: int = 0        # tokens in the loss: assistant tokens + their end token (SFT); all (pretraining)
  zero_loss_batches: int = 0  # batches whose loss mask is all zero (reported, see `update`)

  STREAM = ("batches", "rows", "slots", "examples", "tokens", "loss_tokens", "zero_loss_batches")

  @property
  def packing_efficiency(self) -> float:
    """Real tokens / slots."""
    return self.tokens / self.slots if self.slots else 0.0

  def update(self, batch: dict[str, np.ndarray]) -> None:
    seg = batch["segment_ids"]
    self.batches += 1
    self.rows += seg.shape[0]
    self.slots += seg.size
    self.examples += int(seg.max(axis=1).sum())   # segment ids are 1..k per row
    self.tokens += int(np.count_nonzero(seg))
    loss = int(batch["loss_mask"].sum())
    self.loss_tokens += loss
    if loss == 0:
      self.zero_loss_batches += 1
      log.warning("batch %d has no loss tokens (loss_mask all zero); %d such batch(es) so far. Its loss is "
                  "undefined: the trainer must not divide by its token count.", self.batches,
                  self.zero_loss_batches)

  def stream_state(self) -> dict[str, int]:
    return {k: getattr(self, k) for k in self.STREAM}

  def load_stream_state(self, state: dict[str, int]) -> None:
    for k in self.STREAM:
      setattr(self, k, int(state[k]))

  def to_dict(self) -> dict[str, Any]:
    return {**self.corpus, **self.stream_state(), "packing_efficiency": self.packing_efficiency}


class _StatsIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, corpus_summary: dict[str, Any]):
    super().__init__(parent)
    self.stats = LoaderStats(corpus=dict(corpus_summary))

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._parent)
    self.stats.update(batch)
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "stats": self.stats.stream_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self.stats.load_stream_state(state["stats"])


class StatsIterDataset(grain.IterDataset):
  """Last stage: passes batches through and counts them; `iter(ds).stats` is a `LoaderStats`."""

  def __init__(self, parent: grain.IterDataset, corpus_summary: dict[str, Any]):
    super().__init__(parent)
    self.corpus_summary = corpus_summary

  def __iter__(self) -> _StatsIterator:
    return _StatsIterator(self._parent.__iter__(), self.corpus_summary)

  def __str__(self) -> str:
    return "StatsIterDataset"


# ---- the pipeline ----------------------------------------------------------------------------------

def build_pipeline(corpus: EncodedCorpus, *, shard: tuple[int, int], rows: int, max_seq_len: int, packing: bool,
                   packing_algorithm: str, num_packing_bins: int, shuffle: bool, seed: int,
                   num_epochs: int | None, pad_to_multiple: int, pad_id: int,
                   batched: bool = True) -> grain.IterDataset:
  """The Grain pipeline over shard `(index, count)` of `corpus`, `rows` rows per batch (this process's share).
  `batched=False` stops before batching (rows one by one; used to count rows per epoch)."""
  index, count = shard
  ds = grain.MapDataset.source(corpus)[index::count]
  if len(ds) == 0:
    raise ValueError(f"process {index} of {count} has no examples: the data has only {len(corpus)} usable "
                     "example(s). Use more data or fewer processes.")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  # Reading a slice of an in-memory array needs no reader threads; threads only add hand-offs.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if packing:
    ds = PACKERS[packing_algorithm](
        ds, length_struct={k: max_seq_len for k in FEATURES}, num_packing_bins=num_packing_bins, seed=seed,
        shuffle_bins=shuffle, meta_features=("targets", "loss_mask"),
        padding_struct={"inputs": pad_id, "targets": pad_id, "loss_mask": 0})
  if not batched:
    return ds
  # A partial (picklable, unlike a lambda) so the pipeline can also run in Grain's worker processes.
  ds = ds.batch(rows, drop_remainder=False,
                batch_fn=functools.partial(collate, rows=rows, max_len=max_seq_len, pad_to_multiple=pad_to_multiple,
                                           pad_id=pad_id, packed=packing))
  return StatsIterDataset(ds, corpus.summary)


def count_rows(corpus: EncodedCorpus, **pipeline_kw) -> int:
  """Rows one epoch of this shard gives (packing order and bins exactly as in training's first epoch)."""
  ds = build_pipeline(corpus, **{**pipeline_kw, "num_epochs": 1, "batched": False})
  if not pipeline_kw["packing"]:
    return len(grain.MapDataset.source(corpus)[pipeline_kw["shard"][0]::pipeline_kw["shard"][1]])
  return sum(1 for _ in ds)
