"""Evaluation prompts: the bundled 100-question set, or held-out conversations, as `Question`s.

The 100 questions (telugu_jax/assets/eval/questions.jsonl) were written for this project: natural Telugu
prompts over six categories, some with history (multi-turn), with a reference answer where one answer is
right (factual, translation, summarisation, most instructions) and none where many are (creative writing,
open conversation). They are stored as `Conversation` records: the turns up to the last user turn are the
prompt, a final assistant turn is the reference; `meta.category` and `meta.expected_script` ("te", or
"other" for a Telugu -> English translation) say how to score it.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections import Counter
from collections.abc import Sequence

from telugu_jax.data.records import Conversation, Turn, read_jsonl
from telugu_jax.evaluate.metrics import main_script

CATEGORIES = ("factual", "instruction", "creative", "conversational", "summarisation", "translation")
BUNDLED = "bundled"


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  category: str
  prompt: tuple[Turn, ...]          # history ending with the user turn to answer
  reference: str | None
  expected_script: str = "te"       # "te" or "other"

  @property
  def text(self) -> str:
    """The user turn being answered."""
    return self.prompt[-1].content


def from_conversation(conv: Conversation, *, default_category: str = "other") -> Question:
  """A conversation as a question: a final assistant turn becomes the reference."""
  turns = tuple(conv.turns)
  reference = None
  if turns and turns[-1].role == "assistant":
    turns, reference = turns[:-1], turns[-1].content
  if not turns or turns[-1].role != "user":
    raise ValueError(f"record {conv.id!r}: needs a user turn to answer (turns must end user[, assistant])")
  expected = conv.meta.get("expected_script")
  if expected is None:  # held-out data: the reference's script says what is expected; else Telugu
    expected = (main_script(reference) if reference else None) or "te"
  if expected not in ("te", "other"):
    raise ValueError(f"record {conv.id!r}: meta.expected_script must be 'te' or 'other', got {expected!r}")
  return Question(id=conv.id, category=str(conv.meta.get("category", default_category)), prompt=turns,
                  reference=reference, expected_script=expected)


def bundled_path() -> str:
  return str(importlib.resources.files("telugu_jax") / "assets" / "eval" / "questions.jsonl")


def load_questions(path: str = BUNDLED, *, limit: int = 0, per_category: int = 0) -> list[Question]:
  """Questions from a Conversation JSONL file (`"bundled"`: the 100-question set).

  Args:
    limit: keep the first `limit` questions after the per-category cut (0: all).
    per_category: keep the first `per_category` of each category (0: all), so a quick run still covers
      every category.
  """
  questions = [from_conversation(c) for c in read_jsonl(bundled_path() if path == BUNDLED else path)]
  ids = Counter(q.id for q in questions)
  if dupes := [i for i, n in ids.items() if n > 1]:
    raise ValueError(f"{path}: duplicate question ids {dupes[:5]}; each id must be unique")
  if per_category:
    seen: Counter = Counter()
    kept = []
    for q in questions:
      if seen[q.category] < per_category:
        kept.append(q)
        seen[q.category] += 1
    questions = kept
  return questions[:limit] if limit else questions


def category_counts(questions: Sequence[Question]) -> dict[str, int]:
  return dict(Counter(q.category for q in questions))
