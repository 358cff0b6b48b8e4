"""SIB-200 Telugu topic classification by likelihood: no generation.

Input: `sib200_tel_Telu_{train,dev,test}.tsv` (header `index_id, category, text`; 7 categories). Each
sentence is put in a fixed Telugu prompt that lists the seven topics by their Telugu names; each name is
scored as the assistant's reply in the chat format, log p(" name" + end of turn | prompt) summed over its
tokens (the reply's tokens and the `<eos>` that ends it, the tokens a fine-tuned model is trained on), and
the most likely name is the prediction. Accuracy is against chance, 100/7 %. `k` examples from `train`
are earlier exchanges, picked round-robin over the categories (k = 7: one per topic); without `train`, the
first k sentences, which are then not scored.
"""

from __future__ import annotations

import collections
import dataclasses

from telugu_jax.data.records import Turn
from telugu_jax.evaluate.tasks.common import (
  Scorer,
  TaskDataError,
  chat_format,
  few_shot,
  limited,
  read_flores_tsv,
  shot_turns,
)

LABELS = {  # SIB-200 category -> the Telugu name the model is asked to say
    "science/technology": "శాస్త్ర సాంకేతికం",
    "travel": "ప్రయాణం",
    "politics": "రాజకీయాలు",
    "sports": "క్రీడలు",
    "health": "ఆరోగ్యం",
    "entertainment": "వినోదం",
    "geography": "భౌగోళికం",
}
PROMPT = "ఈ వాక్యం ఏ అంశం గురించి? " + ", ".join(LABELS.values()) + " లో ఒకటి చెప్పండి.\n{}"


@dataclasses.dataclass(frozen=True)
class Settings:
  path: str = ""
  train: str = ""
  limit: int = 0
  k: int = 0

  def inputs(self) -> tuple[str, ...]:
    return (self.path,) + ((self.train,) if self.k and self.train else ())


def read_items(path: str) -> list[dict]:
  rows = read_flores_tsv(path)
  for r in rows:
    if r.get("category") not in LABELS:
      raise TaskDataError(f"{path}:{r['line']}: category {r.get('category')!r} is not one of {sorted(LABELS)}")
  return rows


def round_robin(rows: list[dict], k: int) -> list[dict]:
  """k rows, one category after another (sorted), each category's rows in file order."""
  by: dict = collections.defaultdict(list)
  for r in rows:
    by[r["category"]].append(r)
  out, cats = [], sorted(by)
  while len(out) < min(k, len(rows)):
    for c in cats:
      if by[c] and len(out) < k:
        out.append(by[c].pop(0))
  return out


def run(loaded, settings: Settings, *, batch_size: int = 8) -> tuple[dict, list[dict]]:
  items = read_items(settings.path)
  train = round_robin(read_items(settings.train), settings.k) if settings.k and settings.train else None
  shots, items = few_shot(items, train, settings.k)
  items = limited(items, settings.limit)
  fmt = chat_format(loaded)
  history = shot_turns([(PROMPT.format(s["text"]), LABELS[s["category"]]) for s in shots])
  seqs, starts = [], []
  for it in items:
    turns = [*history, Turn("user", PROMPT.format(it["text"]))]
    prompt_len = len(fmt.encode_prompt(turns))
    for name in LABELS.values():
      ids = fmt.encode([*turns, Turn("assistant", name)]).ids
      seqs.append(ids.tolist())
      starts.append(prompt_len)  # the reply's first token; ids[:prompt_len] are the prompt's ids
  scorer = Scorer(loaded, batch_size=batch_size)
  too_long = [len(s) for s in seqs if len(s) > scorer.max_len]
  if too_long:
    raise TaskDataError(f"{settings.path}: a prompt of {max(too_long)} tokens exceeds the model's context of "
                        f"{scorer.max_len}; lower k")
  lps = scorer.log_probs(seqs)
  cats = list(LABELS)
  rows, right, predicted = [], 0, collections.Counter()
  for i, it in enumerate(items):
    scores = [float(lps[i * len(cats) + j][starts[i * len(cats) + j] - 1:].sum()) for j in range(len(cats))]
    pred = cats[max(range(len(cats)), key=scores.__getitem__)]
    right += pred == it["category"]
    predicted[pred] += 1
    rows.append({"id": it["index_id"], "prompt": it["text"], "reference": it["category"], "text": pred,
                 "scores": dict(zip(cats, scores, strict=True))})
  return {"n": len(items), "k": len(shots), "accuracy": 100.0 * right / max(len(items), 1),
          "chance": 100.0 / len(cats), "predicted": dict(sorted(predicted.items()))}, rows
