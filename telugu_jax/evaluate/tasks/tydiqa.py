"""Closed-book TyDi QA (GoldP Telugu questions with short answers): exact match, token F1, "contains".

Input, either shape:
- QuIST-style JSON, `{"results": {id: {"question": ..., "answer": ..., ...}}}` (other keys ignored);
- JSONL, one `{"question": ..., "answer": ...}` per line (`id` optional; `answer` a string or a list of
  acceptable strings).
No passage is given (closed book): the model answers from what it knows. `k` examples come from `train` (same
shapes) or, without it, from the first k questions, which are then not scored.

Normalisation, applied to prediction and gold alike (`normalise`): Unicode NFC; ZWNJ and ZWJ removed
(rendering hints inside a word); every punctuation character (Unicode category P: `.,?!"'()-` and the
danda `।`) removed; casefold (Latin); whitespace collapsed. Nothing else: Telugu case markers and
postpositions (`-లో`, `-కి`, `-ను`) are NOT stripped, so "హైదరాబాదులో" against the gold "హైదరాబాదు" is no
exact match and no F1 credit (another word), but it does count for "contains".

Metrics (0-100, mean over questions, the best over a question's gold strings):
exact_match: normalised prediction == normalised gold; f1: SQuAD token F1 over whitespace tokens of the
normalised strings; contains: the normalised gold is a substring of the normalised prediction.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import unicodedata

from telugu_jax.data.records import Turn
from telugu_jax.evaluate.tasks.common import TaskDataError, few_shot, generate_answers, limited, shot_turns

INSTRUCTION = "కింది ప్రశ్నకు కొన్ని పదాల్లో జవాబు ఇవ్వండి.\n{}"


@dataclasses.dataclass(frozen=True)
class Settings:
  path: str = ""
  train: str = ""
  limit: int = 0
  k: int = 0
  max_new_tokens: int = 32

  def inputs(self) -> tuple[str, ...]:
    return (self.path,) + ((self.train,) if self.k and self.train else ())


def _item(path: str, where: str, rid: str, rec) -> dict:
  if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or "answer" not in rec:
    raise TaskDataError(f"{path}: {where} needs 'question' (text) and 'answer'")
  golds = rec["answer"] if isinstance(rec["answer"], list) else [rec["answer"]]
  golds = [str(g) for g in golds if str(g).strip()]
  if not golds:
    raise TaskDataError(f"{path}: {where} has an empty answer")
  return {"id": str(rec.get("id", rid)), "question": rec["question"], "answers": golds}


def read_items(path: str) -> list[dict]:
  """{id, question, answers: [str]} from the QuIST JSON or a question/answer JSONL."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  stripped = text.lstrip()
  if stripped.startswith("{"):
    try:
      data = json.loads(text)
    except json.JSONDecodeError:
      data = None  # not one JSON document: JSONL
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
      return [_item(path, f"results[{k!r}]", k, v) for k, v in data["results"].items()]
    if isinstance(data, dict) and "question" not in data:
      raise TaskDataError(f"{path}: a JSON object without 'results': expected {{\"results\": {{id: {{question, "
                          "answer}}}}}} or JSONL lines of {\"question\", \"answer\"}")
  items = []
  for line_no, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise TaskDataError(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
    items.append(_item(path, f"line {line_no}", str(line_no), rec))
  return items


def normalise(text: str) -> str:
  text = unicodedata.normalize("NFC", text).replace("\u200c", "").replace("\u200d", "")
  text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
  return " ".join(text.casefold().split())


def token_f1(prediction: str, gold: str) -> float:
  p, g = normalise(prediction).split(), normalise(gold).split()
  common = sum((collections.Counter(p) & collections.Counter(g)).values())
  if not p or not g or common == 0:
    return float(not p and not g)
  precision, recall = common / len(p), common / len(g)
  return 2 * precision * recall / (precision + recall)


def score(prediction: str, golds: list[str]) -> dict:
  """{exact_match, f1, contains} in [0, 1] for one question: the best over its gold strings."""
  pred = normalise(prediction)
  return {"exact_match": float(any(pred == normalise(g) for g in golds)),
          "f1": max(token_f1(prediction, g) for g in golds),
          "contains": float(any(normalise(g) and normalise(g) in pred for g in golds))}


def run(loaded, settings: Settings, *, batch_size: int = 16) -> tuple[dict, list[dict]]:
  items = read_items(settings.path)
  train = read_items(settings.train) if settings.k and settings.train else None
  shots, items = few_shot(items, train, settings.k)
  items = limited(items, settings.limit)
  history = shot_turns([(INSTRUCTION.format(s["question"]), s["answers"][0]) for s in shots])
  answers = generate_answers(loaded, [[*history, Turn("user", INSTRUCTION.format(it["question"]))] for it in items],
                             max_new_tokens=settings.max_new_tokens, batch_size=batch_size)
  rows, totals = [], collections.Counter()
  for it, a in zip(items, answers, strict=True):
    s = score(a.text, it["answers"])
    totals.update(s)
    rows.append({"id": it["id"], "prompt": it["question"], "reference": it["answers"][0], "text": a.text,
                 "error": a.error, **s})
  n = max(len(items), 1)
  means = {m: 100.0 * totals[m] / n for m in ("exact_match", "f1", "contains")}
  return {"n": len(items), "k": len(shots), **means}, rows
