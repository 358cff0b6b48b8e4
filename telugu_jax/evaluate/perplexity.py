"""Perplexity on loss tokens (assistant tokens for SFT data, every token for raw text).

Both systems of a comparison see the same batches (same loader, no shuffling, one pass), so the
same tokens are counted; the result says how many, and how many records the loader could not use
(too long for `max_seq_len`, ...) or shortened (oldest turns dropped).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax

from telugu_jax.model.io import LoadedModel
from telugu_jax.train.core import evaluate_dataset
from telugu_jax.train.loss import loss_sums


@dataclasses.dataclass
class Perplexity:
  loss: float        # mean cross-entropy per loss token (nats)
  ppl: float
  tokens: int
  records: int = 0                                         # records (conversations / documents) read
  rejected: dict = dataclasses.field(default_factory=dict)  # reason -> count, not counted in the perplexity
  truncated: int = 0                                       # conversations whose oldest turns were dropped

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def perplexity(loaded: LoadedModel, paths: Sequence[str], *, kind: str = "sft", max_seq_len: int = 512,
               batch_size: int = 8, use_lora: bool = True, tokenizer=None) -> Perplexity:
  from telugu_jax.data import loader as L

  tokenizer = tokenizer or loaded.tokenizer
  cfg = L.LoaderConfig(max_seq_len=max_seq_len, batch_size=batch_size, shuffle=False, num_epochs=1)
  if kind == "sft":
    fmt = loaded.chat_format(tokenizer)  # its template; one instance: the loader caches encodings per instance
    summary = L.sft_corpus(list(paths), fmt, cfg).summary
    ds = L.sft_dataset(list(paths), fmt, cfg, process_index=0, process_count=1)
  else:
    summary = L.text_corpus(list(paths), tokenizer, cfg).summary
    ds = L.pretrain_dataset(list(paths), tokenizer, cfg, process_index=0, process_count=1)
  variables = loaded.variables if use_lora else {"params": loaded.variables["params"]}
  model = loaded.model() if use_lora and "lora" in variables else loaded.model().clone(lora=None)
  trainable = {k: v for k, v in variables.items() if k == "lora"}
  frozen = {"params": variables["params"]}
  fn = jax.jit(functools.partial(loss_sums, model, deterministic=True))
  sums = evaluate_dataset(lambda batch: {k: v for k, v in fn(trainable, frozen, batch, None)[1].items()
                                         if k in ("ce_sum", "tokens")}, ds)
  n = sums.get("tokens", 0.0)
  loss = sums.get("ce_sum", 0.0) / max(n, 1.0)
  return Perplexity(loss=loss, ppl=math.exp(min(loss, 50.0)), tokens=int(n), records=int(summary.get("records", 0)),
                    rejected=dict(summary.get("rejected", {})), truncated=int(summary.get("truncated", 0)))
