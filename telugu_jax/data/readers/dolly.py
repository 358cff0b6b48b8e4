"""Dolly (databricks-dolly-15k): JSONL of {"instruction", "context", "response", "category"}. The
context (a reference passage for closed QA, summarisation, extraction) is joined after the instruction;
the category goes to meta, where `mix` can use it."""

from __future__ import annotations

from telugu_jax.data.readers.common import field, make
from telugu_jax.data.records import Conversation


def convert(row, where: str, id: str, source: str) -> Conversation:
  instruction = field(row, "instruction", where)
  context = field(row, "context", where, required=False)
  response = field(row, "response", where)
  category = field(row, "category", where, required=False)
  user = f"{instruction.strip()}\n\n{context.strip()}" if context.strip() else instruction.strip()
  return make(id, source, [("user", user), ("assistant", response.strip())], where, category=category)
