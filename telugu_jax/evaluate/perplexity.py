"""Perplexity on loss tokens (assistant tokens for SFT data, every token for raw text).

Both systems of a comparison see the same batches (same loader, no shuffling, one pass), so the
same tokens are counted; the result says how many.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax

from telugu_jax.chat_format import ChatFormat
from telugu_jax.model.io import LoadedModel
from telugu_jax.train.loss import loss_sums


@dataclasses.dataclass
class Perplexity:
  loss: float        # mean cross-entropy per loss token (nats)
  ppl: float
  tokens: int

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def perplexity(loaded: LoadedModel, paths: Sequence[str], *, kind: str = "sft", max_seq_len: int = 512,
               batch_size: int = 8, use_lora: bool = True, tokenizer=None) -> Perplexity:
  from telugu_jax.data import loader as L

  tokenizer = tokenizer or loaded.tokenizer
  cfg = L.LoaderConfig(max_seq_len=max_seq_len, batch_size=batch_size, shuffle=False, num_epochs=1)
  if kind == "sft":
    ds = L.sft_dataset(list(paths), ChatFormat(tokenizer), cfg, process_index=0, process_count=1)
  else:
    ds = L.pretrain_dataset(list(paths), tokenizer, cfg, process_index=0, process_count=1)
  variables = loaded.variables if use_lora else {"params": loaded.variables["params"]}
  model = loaded.model() if use_lora and "lora" in variables else loaded.model().clone(lora=None)
  trainable = {k: v for k, v in variables.items() if k == "lora"}
  frozen = {"params": variables["params"]}
  fn = jax.jit(functools.partial(loss_sums, model, deterministic=True))
  ce, n = 0.0, 0.0
  for batch in ds:
    _, aux = fn(trainable, frozen, batch, None)
    ce += float(aux["ce_sum"])
    n += float(aux["tokens"])
  loss = ce / max(n, 1.0)
  return Perplexity(loss=loss, ppl=math.exp(min(loss, 50.0)), tokens=int(n))
