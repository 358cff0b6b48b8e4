"""What the benchmark tasks share: the one call into generation, likelihood scoring, readers, few-shot turns.

- `generate_answers(loaded, prompts, max_new_tokens, batch_size)`: greedy answers to chat prompts (turn lists).
  Every task generates through it, so a new inference driver is swapped in here and nowhere else.
- `Scorer`: log p(token | everything before it in its row) for many rows of token ids, with the LoRA adapter
  merged once. Rows are right-padded to a power-of-two width (at least 64, at most the model's context) and
  batched to a fixed size, so one program is compiled per width and architecture, shared by the tasks and by
  every system of that architecture. The output projection and log-softmax
  run `chunk` positions at a time, so a 32K vocabulary never holds [B, T, V] logits (2 GiB at 8 x 2048).
- `read_flores_tsv`: the FLORES-200 / SIB-200 TSV (`index_id, category, text`, with that header).
- `few_shot`: k examples from a train split, or, without one, the first k items (then not scored).

Shape legend: B batch, T row width, D model, V vocab, C chunk.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from telugu_jax.chat_format import ChatFormat, ChatTemplate
from telugu_jax.data.records import Turn

MIN_WIDTH = 64


class TaskDataError(ValueError):
  """A benchmark file that does not have its upstream shape; the message names the file and line."""


# ---- generation: the one place tasks call the inference driver -------------------------------------------

@dataclasses.dataclass(frozen=True)
class Answer:
  text: str                 # the answer as shown (cut at a stop string, stripped)
  error: str | None = None  # why nothing was generated (prompt too long for the context)


def generate_answers(loaded, prompts: Sequence[Sequence[Turn]], *, max_new_tokens: int,
                     batch_size: int = 16) -> list[Answer]:
  """Greedy answers, one per prompt (a history of turns ending with the user turn), in order."""
  from telugu_jax.evaluate.answers import generate_answers as answer_questions
  from telugu_jax.evaluate.questions import Question
  from telugu_jax.generate import SamplingConfig

  questions = [Question(id=str(i), category="task", prompt=tuple(p), reference=None) for i, p in enumerate(prompts)]
  rows = answer_questions(loaded, questions, SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                          batch_size=batch_size)
  return [Answer(text=r["text"], error=r["error"]) for r in rows]


def chat_format(loaded) -> ChatFormat:
  """The model's own chat format (the template recorded in model.json, else the default)."""
  if loaded.tokenizer is None:
    raise ValueError(f"{loaded.path} has no tokenizer: the benchmark tasks need one")
  return ChatFormat(loaded.tokenizer, ChatTemplate(**(loaded.meta.get("chat_template") or {})))


# ---- likelihood ----------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def _log_probs(variables, tokens_bt, targets_bt, segment_ids_bt, *, model, chunk: int):
  """log p(targets[b, t] | tokens[b, :t+1]) [B, T] float32, `chunk` positions at a time through the head."""
  hidden = model.apply(variables, tokens_bt, segment_ids=segment_ids_bt, return_hidden=True)
  b, t, d = hidden.shape
  h, tgt = hidden.reshape(-1, d), targets_bt.reshape(-1)
  pad = (-h.shape[0]) % chunk
  h, tgt = jnp.pad(h, ((0, pad), (0, 0))), jnp.pad(tgt, (0, pad))

  def one(xs):
    h_cd, t_c = xs
    logits = model.output_head(variables["params"], h_cd)   # the model's one output head
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), t_c[:, None], axis=-1)[:, 0]

  out = jax.lax.map(one, (h.reshape(-1, chunk, d), tgt.reshape(-1, chunk)))
  return out.reshape(-1)[:b * t].reshape(b, t)


class Scorer:
  """Token log-probabilities of a loaded model (adapter merged), batched and bucketed by width."""

  def __init__(self, loaded, *, batch_size: int = 8, chunk: int = 256):
    from telugu_jax.model.llama import Llama
    from telugu_jax.model.lora import merge_lora

    params = loaded.variables["params"]
    if "lora" in loaded.variables:
      params = merge_lora(params, loaded.variables["lora"], loaded.lora_config)
    self.config, self.batch_size = loaded.config, batch_size
    self.variables = {"params": jax.tree_util.tree_map(jnp.asarray, params)}
    self.model = Llama(loaded.config)
    self.pad_id = 0 if loaded.tokenizer is None else int(loaded.tokenizer.pad_id)
    # model and chunk are static: every Scorer of the same architecture reuses the compiled programs
    self._fn = functools.partial(_log_probs, model=self.model, chunk=chunk)

  @property
  def max_len(self) -> int:
    return self.config.max_seq_len

  def width(self, length: int) -> int:
    w = MIN_WIDTH
    while w < length:
      w *= 2
    return min(w, self.max_len)

  def log_probs(self, rows: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """For each row of ids (length L, 1 <= L <= context): [L - 1] float64, entry i = log p(row[i+1] | row[:i+1])."""
    if any(not 1 <= len(r) <= self.max_len for r in rows):
      raise ValueError(f"every row needs 1..{self.max_len} tokens (the model's context)")
    out: list[np.ndarray | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      w = self.width(max(len(rows[i]) for i in idx))
      tokens = np.full((self.batch_size, w), self.pad_id, np.int32)
      segments = np.zeros((self.batch_size, w), np.int32)
      for r, i in enumerate(idx):
        tokens[r, :len(rows[i])] = rows[i]
        segments[r, :len(rows[i])] = 1
      targets = np.concatenate([tokens[:, 1:], np.full((self.batch_size, 1), self.pad_id, np.int32)], axis=1)
      lp = np.asarray(self._fn(self.variables, tokens, targets, segments), np.float64)
      for r, i in enumerate(idx):
        out[i] = lp[r, :len(rows[i]) - 1]
    return out  # type: ignore[return-value]


# ---- readers and few-shot ------------------------------------------------------------------------------

def read_flores_tsv(path: str) -> list[dict]:
  """Rows {index_id, category, text} of a SIB-200 / FLORES-200 TSV with the header `index_id, category, text`."""
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or not {"index_id", "text"} <= set(header):
      raise TaskDataError(f"{path}: line 1 must be the header 'index_id<TAB>category<TAB>text', got {header}")
    rows = []
    for line, cells in enumerate(reader, start=2):
      if not cells or not any(c.strip() for c in cells):
        continue
      if len(cells) != len(header):
        raise TaskDataError(f"{path}:{line}: {len(cells)} tab-separated fields, the header has {len(header)}")
      rows.append({**dict(zip(header, cells, strict=True)), "line": line})
  return rows


def few_shot(items: list, train: list | None, k: int) -> tuple[list, list]:
  """(examples, items to score): the first k of the train split, or, without one, the first k items, which
  then are not scored (an example is never also a question)."""
  if k <= 0:
    return [], items
  if train:
    return train[:k], items
  return items[:k], items[k:]


def shot_turns(examples: Sequence[tuple[str, str]]) -> list[Turn]:
  """Few-shot examples (user text, assistant text) as earlier turns of the conversation."""
  return [t for q, a in examples for t in (Turn("user", q), Turn("assistant", a))]


def limited(items: list, limit: int) -> list:
  return items[:limit] if limit > 0 else items
