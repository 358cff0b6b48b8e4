"""MGSM Telugu: grade-school math word problems, scored by the last number in the answer.

Input: `mgsm_te.tsv` as google-research/url-nlp publishes it, no header, `question<TAB>integer answer`.
Few-shot examples (`train`, k of them) come from a TSV of the same shape or from MGSM's exemplars as JSON
(`{"1": {"q": ..., "a": ...}, ...}`, optionally under a language key `"te"`), whose answers reason step
by step; without `train`, the first k problems are the examples and are not scored.

Scoring: the answer's Telugu digits (౦-౯) are read as ASCII digits, thousands separators inside a number are
dropped, and the last number (an optional minus, digits, an optional decimal part) is the prediction; it is
right when it equals the gold integer. An answer without a number is wrong.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import unicodedata

from telugu_jax.data.records import Turn
from telugu_jax.evaluate.tasks.common import TaskDataError, few_shot, generate_answers, limited, shot_turns

NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


@dataclasses.dataclass(frozen=True)
class Settings:
  path: str = ""
  train: str = ""
  limit: int = 0
  k: int = 0
  max_new_tokens: int = 256

  def inputs(self) -> tuple[str, ...]:
    return (self.path,) + ((self.train,) if self.k and self.train else ())


def read_tsv(path: str) -> list[dict]:
  """{question, answer (int)} per line of `question<TAB>answer`."""
  items = []
  with open(path, encoding="utf-8", newline="") as f:
    for line, cells in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
      if not cells or not any(c.strip() for c in cells):
        continue
      if len(cells) != 2:
        raise TaskDataError(f"{path}:{line}: expected 'question<TAB>answer', got {len(cells)} fields")
      try:
        answer = int(cells[1].strip().replace(",", ""))
      except ValueError:
        raise TaskDataError(f"{path}:{line}: answer {cells[1]!r} is not an integer") from None
      items.append({"question": cells[0], "answer": answer, "solution": str(answer)})
  return items


def read_exemplars(path: str, language: str = "te") -> list[dict]:
  """MGSM exemplars as JSON: {"1": {"q", "a"}, ...}, possibly under a language key."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if isinstance(data, dict) and language in data and isinstance(data[language], dict):
    data = data[language]
  if not isinstance(data, dict) or not all(isinstance(v, dict) and {"q", "a"} <= set(v) for v in data.values()):
    raise TaskDataError(f"{path}: expected {{\"1\": {{\"q\": ..., \"a\": ...}}, ...}} (optionally under {language!r})")
  out = []
  for key in sorted(data, key=lambda s: (len(s), s)):
    nums = last_number(data[key]["a"])
    out.append({"question": data[key]["q"], "answer": nums, "solution": data[key]["a"]})
  return out


def read_train(path: str) -> list[dict]:
  return read_exemplars(path) if path.endswith(".json") else read_tsv(path)


def last_number(text: str) -> float | None:
  """The last number written in `text` (Telugu or ASCII digits), or None."""
  ascii_text = "".join(str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in text)
  found = NUMBER.findall(ascii_text)
  return float(found[-1].replace(",", "")) if found else None


def run(loaded, settings: Settings, *, batch_size: int = 16) -> tuple[dict, list[dict]]:
  items = read_tsv(settings.path)
  train = read_train(settings.train) if settings.k and settings.train else None
  shots, items = few_shot(items, train, settings.k)
  items = limited(items, settings.limit)
  history = shot_turns([(s["question"], s["solution"]) for s in shots])
  answers = generate_answers(loaded, [[*history, Turn("user", it["question"])] for it in items],
                             max_new_tokens=settings.max_new_tokens, batch_size=batch_size)
  rows, right = [], 0
  for i, (it, a) in enumerate(zip(items, answers, strict=True)):
    pred = last_number(a.text)
    ok = pred is not None and pred == it["answer"]
    right += ok
    rows.append({"id": str(i), "prompt": it["question"], "reference": str(it["answer"]), "text": a.text,
                 "prediction": pred, "correct": ok, "error": a.error})
  return {"n": len(items), "k": len(shots), "accuracy": 100.0 * right / max(len(items), 1),
          "no_number": sum(r["prediction"] is None for r in rows)}, rows
