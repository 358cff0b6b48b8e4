"""Preference pairs -> token ids with a response mask -> Grain batches of [B, 2, L] rows (chosen, rejected).

    corpus = pair_corpus(paths, ChatFormat(tokenizer), max_seq_len=1024)
    ds = pair_dataset(corpus, PairLoaderConfig(max_seq_len=1024, batch_size=16))
    batch = next(iter(ds))   # inputs targets loss_mask segment_ids positions: [B, 2, L] int32

Each side is encoded as a whole conversation with the chat format (render once, encode once, as SFT
does), so DPO scores exactly the ids that inference produces. The response mask is the chat format's
loss mask with everything before the final answer zeroed: the final answer and its end token (`<eos>`)
only, never an earlier assistant turn of the history. The prompt's inference ids must be a prefix of
both sides' ids (checked for every pair; a tokenizer that merges across the boundary is rejected).

Too long: whole oldest (user, assistant) pairs of the history are dropped from *both* sides until both
fit `max_seq_len + 1` tokens; if the last exchange alone is too long, `over_long="reject"` rejects the
pair (too_long), `"truncate"` cuts the answers at the end (then the cut side has no `<eos>` in its mask).
Every rejected or shortened pair is listed with its reason; nothing is dropped silently.

Storage: the two sides of pair i are examples 2i and 2i+1 of the SFT loader's flat `EncodedCorpus`, so
targets are shifted the same way and a million pairs cost flat arrays, not Python objects. Rows are
padded, never packed (a pair's two rows must stay whole), to `max_seq_len` (one compiled step) unless
`pad_to_multiple` asks for buckets. Axis 1 of a batch holds (chosen, rejected): sharding the batch axis
keeps both sides of a pair on one device, and the step flattens [B, 2] to 2B rows for ONE forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from telugu_jax.chat_format import BoundaryMergeError, ChatFormat, ChatFormatError, TooLongError
from telugu_jax.data.packing import CorpusBuilder, EncodedCorpus
from telugu_jax.data.records import RecordError
from telugu_jax.dpo.records import PreferencePair, iter_pairs

log = logging.getLogger(__name__)

BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")
OVER_LONG = ("reject", "truncate")


@dataclasses.dataclass(frozen=True)
class EncodedPair:
  chosen: np.ndarray          # [Lc] int32: bos ... eos
  rejected: np.ndarray        # [Lr] int32
  chosen_mask: np.ndarray     # [Lc] int32: 1 on the final answer's tokens and its end token
  rejected_mask: np.ndarray   # [Lr] int32
  prompt_len: int             # ids shared by both sides (bos + history + "assistant:")
  dropped_turns: int = 0
  truncated: bool = False


def _response_mask(fmt: ChatFormat, turns, prompt_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  enc = fmt.encode(turns)
  p = len(prompt_ids)
  if len(enc.ids) <= p or not np.array_equal(enc.ids[:p], prompt_ids):
    raise BoundaryMergeError("the prompt's inference ids are not a prefix of the conversation's ids: the tokenizer "
                             "merges across the prompt/answer boundary")
  mask = enc.loss_mask.copy()
  mask[:p] = 0
  return enc.ids, mask


def encode_pair(fmt: ChatFormat, pair: PreferencePair, max_len: int | None = None,
                over_long: str = "reject") -> EncodedPair:
  """Ids and response masks of both sides; `max_len` in tokens (bos and eos included). Raises a
  `ChatFormatError` (with its `reason`) when the pair cannot become a training example."""
  if over_long not in OVER_LONG:
    raise ValueError(f"over_long={over_long!r}; choose one of {OVER_LONG}")
  prompt, dropped = list(pair.prompt), 0
  while True:
    prompt_ids = fmt.encode_prompt(prompt)
    c, cm = _response_mask(fmt, (*prompt, pair.turns("chosen")[-1]), prompt_ids)
    r, rm = _response_mask(fmt, (*prompt, pair.turns("rejected")[-1]), prompt_ids)
    if max_len is None or max(len(c), len(r)) <= max_len:
      return EncodedPair(c, r, cm, rm, len(prompt_ids), dropped)
    if len(prompt) > 1:
      prompt, dropped = prompt[2:], dropped + 2
      continue
    if over_long == "truncate" and len(prompt_ids) < max_len:
      return EncodedPair(c[:max_len], r[:max_len], cm[:max_len], rm[:max_len], len(prompt_ids), dropped, True)
    raise TooLongError(f"{max(len(c), len(r))} tokens with only the last exchange left; the limit is {max_len}"
                       + (" (the prompt alone fills it)" if over_long == "truncate" else ""))


# ---- corpus ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PairCorpus:
  """Encoded pairs (sides 2i, 2i+1 of `corpus`), their ids, and what was rejected or shortened."""

  corpus: EncodedCorpus
  ids: tuple[str, ...]
  summary: dict[str, Any]
  rejections: list[dict]
  ref_logps: np.ndarray | None = None   # [n, 2] float32 reference log-probs, when precomputed

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int) -> dict[str, Any]:
    out = {"chosen": self.corpus[2 * i], "rejected": self.corpus[2 * i + 1]}
    if self.ref_logps is not None:
      out["ref_logps"] = self.ref_logps[i]
    return out

  def max_length(self) -> int:
    return int(self.corpus.lengths().max())


def _file_keys(paths: Sequence[str]) -> tuple:
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"preference file(s) not found: {', '.join(missing)}")
  from telugu_jax.data.stage import check_finished

  check_finished(paths)  # the records.jsonl of a `dpo read` that did not finish
  return tuple((os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=4)
def _pair_corpus(file_keys: tuple, fmt: ChatFormat, max_seq_len: int, over_long: str) -> PairCorpus:
  builder, ids, rejected, shortened, records = CorpusBuilder(), [], [], [], 0
  for path, _, _ in file_keys:
    def on_error(e: RecordError, line: str) -> None:
      nonlocal records
      records += 1
      rejected.append({"id": None, "where": e.where, "reason": e.reason, "action": "rejected", "detail": str(e),
                       "line": line})

    for pair in iter_pairs(path, on_error=on_error):
      records += 1
      entry = {"id": pair.id, "source": pair.source, "where": path}
      try:
        enc = encode_pair(fmt, pair, max_seq_len + 1, over_long)
      except ChatFormatError as e:
        rejected.append({**entry, "reason": e.reason, "action": "rejected", "detail": str(e),
                         "record": pair.to_dict()})
        continue
      if enc.dropped_turns or enc.truncated:
        shortened.append({**entry, "reason": "truncated" if enc.truncated else "dropped_oldest_turns",
                          "action": "truncated", "dropped_turns": enc.dropped_turns})
      builder.add(pair.id + "/chosen", enc.chosen, enc.chosen_mask)
      builder.add(pair.id + "/rejected", enc.rejected, enc.rejected_mask)
      ids.append(pair.id)
  by_reason = dict(Counter(r["reason"] for r in rejected))
  summary = {"records": records, "pairs": len(ids), "rejected": by_reason,
             "shortened": dict(Counter(s["reason"] for s in shortened))}
  if rejected or shortened:
    log.warning("preference data: %d of %d pairs rejected %s, %d shortened %s; each is listed with its reason in "
                "the run's rejected.jsonl", len(rejected), records, by_reason, len(shortened), summary["shortened"])
  if not ids:
    from telugu_jax.data.loader import DataError

    raise DataError(f"preference data: no usable pair in {records} record(s); rejected by reason: {by_reason}. "
                    "DPO reads pairs JSONL ({id, prompt, chosen, rejected}): convert upstream data with `python -m "
                    "telugu_jax.dpo read`, or sample pairs from the SFT model with `python -m telugu_jax.dpo pairs`",
                    rejected + shortened)
  corpus = builder.build({}, [])
  return PairCorpus(corpus, tuple(ids), summary, rejected + shortened)


def pair_corpus(paths: str | Sequence[str], fmt: ChatFormat, max_seq_len: int, over_long: str = "reject"
                ) -> PairCorpus:
  """All pairs of `paths` (our JSONL: `python -m telugu_jax.dpo read` writes it), encoded once per process
  (cached per files, chat format, length and over-long policy)."""
  paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
  if not paths:
    raise ValueError("no preference files given")
  if over_long not in OVER_LONG:
    raise ValueError(f"over_long={over_long!r}; choose one of {OVER_LONG}")
  return _pair_corpus(_file_keys([os.fspath(p) for p in paths]), fmt, max_seq_len, over_long)


# ---- batches ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PairLoaderConfig:
  max_seq_len: int = 1024     # row length L (tokens after the shift)
  batch_size: int = 16        # GLOBAL pairs per step (2x rows go through the model)
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None
  pad_to_multiple: int = 0    # 0: every batch is L wide (one compile); else the longest row rounded up to this


def collate_pairs(elements: Sequence[dict], *, rows: int, max_len: int, pad_to_multiple: int, pad_id: int
                  ) -> dict[str, np.ndarray]:
  """[rows, 2, width] arrays; rows beyond `elements` are empty (all-zero mask: the objective skips them)."""
  longest = max(len(e[s]["inputs"]) for e in elements for s in ("chosen", "rejected"))
  width = max_len if not pad_to_multiple else min(max_len, -(-longest // pad_to_multiple) * pad_to_multiple)
  out = {k: np.full((rows, 2, width), pad_id if k in ("inputs", "targets") else 0, np.int32) for k in BATCH_KEYS}
  with_ref = "ref_logps" in elements[0]
  if with_ref:
    out["ref_logps"] = np.zeros((rows, 2), np.float32)
  for r, e in enumerate(elements):
    for s, side in enumerate(("chosen", "rejected")):
      x = e[side]
      n = len(x["inputs"])
      for k in ("inputs", "targets", "loss_mask"):
        out[k][r, s, :n] = x[k]
      out["segment_ids"][r, s, :n] = 1
      out["positions"][r, s, :n] = np.arange(n, dtype=np.int32)
    if with_ref:
      out["ref_logps"][r] = e["ref_logps"]
  return out


def pair_dataset(corpus: PairCorpus, cfg: PairLoaderConfig, pad_id: int, *, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """This process's share of the pairs as batches; iterators have get_state/set_state (checkpointed)."""
  if cfg.batch_size % process_count:
    raise ValueError(f"batch_size {cfg.batch_size} is global and must divide evenly over {process_count} processes")
  ds = grain.MapDataset.source(corpus)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"process {process_index} of {process_count} has no pairs: the data has only {len(corpus)}")
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)  # before repeat: Grain folds the epoch into the seed, a new order each epoch
  ds = ds.repeat(cfg.num_epochs).to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  rows = cfg.batch_size // process_count
  return ds.batch(rows, drop_remainder=False,
                  batch_fn=functools.partial(collate_pairs, rows=rows, max_len=cfg.max_seq_len,
                                             pad_to_multiple=cfg.pad_to_multiple, pad_id=pad_id))


def batches_per_epoch(corpus: PairCorpus, batch_size: int) -> int:
  return math.ceil(len(corpus) / batch_size)
