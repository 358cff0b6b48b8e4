"""Alpaca: a JSON list of {"instruction", "input", "output"}; a non-empty input is joined to the
instruction after a blank line, as the Alpaca prompt puts it below the instruction."""

from __future__ import annotations

from telugu_jax.data.readers.common import field, make
from telugu_jax.data.records import Conversation


def convert(row, where: str, id: str, source: str) -> Conversation:
  instruction = field(row, "instruction", where)
  extra = field(row, "input", where, required=False)
  output = field(row, "output", where)
  user = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()
  return make(id, source, [("user", user), ("assistant", output.strip())], where, has_input=bool(extra.strip()))
