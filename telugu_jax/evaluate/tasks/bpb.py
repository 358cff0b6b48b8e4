"""Bits per byte (and per character) on held-out Telugu text: a score that compares models with different
tokenizers, because it divides by the text's size, not by its token count.

Definition. The file is plain UTF-8 text; documents are separated by blank lines (or, with `separator`, by
lines that match that regular expression, e.g. `^=+$` for the 80-`=` rules of a Wikipedia dump), and each
document is the text between separators with surrounding whitespace removed. A document is scored as
`[bos] + tokens(document)`: every token is predicted from all tokens before it in the document, the bos
itself is not predicted and no eos is scored. Then

    bits_per_byte = sum over documents of the NLL in nats / ln 2 / sum of the documents' UTF-8 bytes
    bits_per_char = the same numerator / sum of the documents' characters (Unicode code points)

A document longer than the window (`window`, default the model's context) is read in overlapping windows
`[s, s + window)` for s = 0, stride, 2 stride, ... (`stride`, default window / 2): the first window scores
all its tokens, each later one only the tokens no earlier window scored, so every token is scored exactly
once and, after the first window, with at least `window - stride` tokens of context. A document that fits
is one pass, whatever the stride.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from telugu_jax.evaluate.tasks.common import Scorer, TaskDataError, limited


@dataclasses.dataclass(frozen=True)
class Settings:
  path: str = ""
  limit: int = 0          # first N documents (0: all)
  k: int = 0              # unused: nothing to show in a prompt; kept so every task takes .k
  window: int = 0         # tokens per window; 0: the model's context
  stride: int = 0         # 0: window // 2
  separator: str = ""     # "": blank lines; else a regex a whole separator line matches

  def inputs(self) -> tuple[str, ...]:
    return (self.path,)


def read_documents(path: str, separator: str = "") -> list[str]:
  """The documents of a text file (see the module docstring), empty ones dropped."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if separator:
    pattern = re.compile(separator)
    docs, cur = [], []
    for line in text.split("\n"):
      if pattern.fullmatch(line.strip()):
        docs.append("\n".join(cur))
        cur = []
      else:
        cur.append(line)
    docs.append("\n".join(cur))
  else:
    docs = re.split(r"\n[ \t\r]*\n", text)
  docs = [d.strip() for d in docs]
  return [d for d in docs if d]


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
  """(start, end, first scored) of each window over a sequence of `n_tokens` ids: ids[start:end] is fed, and
  the targets ids[first:end] are scored (first >= start + 1). Every index 1..n_tokens-1 is scored once."""
  if n_tokens <= window:
    return [(0, n_tokens, 1)]
  if not 0 < stride <= window - 1:
    raise ValueError(f"stride must be in 1..window-1 ({window - 1}), got {stride}")
  out, scored_to, start = [], 1, 0
  while scored_to < n_tokens:
    end = min(start + window, n_tokens)
    out.append((start, end, max(scored_to, start + 1)))
    scored_to = end
    start += stride
  return out


def run(loaded, settings: Settings, *, batch_size: int = 8) -> tuple[dict, list[dict]]:
  tok = loaded.tokenizer
  if tok is None:
    raise ValueError(f"{loaded.path} has no tokenizer: bits per byte needs one")
  docs = limited(read_documents(settings.path, settings.separator), settings.limit)
  if not docs:
    raise TaskDataError(f"{settings.path}: no documents (text separated by blank lines)")
  scorer = Scorer(loaded, batch_size=batch_size)
  window = min(settings.window or scorer.max_len, scorer.max_len)
  stride = settings.stride or max(window // 2, 1)
  rows, firsts = [], []
  n_tokens = n_windows = 0
  for doc in docs:
    ids = [tok.bos_id, *tok.encode(doc)]
    n_tokens += len(ids) - 1
    for start, end, first in windows(len(ids), window, stride):
      rows.append(ids[start:end])
      firsts.append(first - start)  # in row coordinates: row[first - start] is the first target scored
      n_windows += 1
  nll = 0.0
  for lp, first in zip(scorer.log_probs(rows), firsts, strict=True):
    nll -= float(np.sum(lp[first - 1:]))
  n_bytes = sum(len(d.encode("utf-8")) for d in docs)
  n_chars = sum(len(d) for d in docs)
  bits = nll / math.log(2)
  return {"n": len(docs), "bits_per_byte": bits / n_bytes, "bits_per_char": bits / n_chars,
          "nll_nats": nll, "tokens": n_tokens, "bytes": n_bytes, "chars": n_chars, "windows": n_windows,
          "window": window, "stride": stride, "token_ppl": math.exp(min(nll / max(n_tokens, 1), 50.0))}, []
