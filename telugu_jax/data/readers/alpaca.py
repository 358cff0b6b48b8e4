"""Alpaca: a JSON list of {"instruction", "input", "output"}; a non-empty input is joined to the
instruction after a blank line, as the Alpaca prompt puts it below the instruction. Alpaca's seed tasks
({"instruction", "instances": [{"input", "output"}, ...]}) give one conversation per instance."""

from __future__ import annotations

from telugu_jax.data.readers.common import field, make
from telugu_jax.data.records import Conversation, RecordError


def convert(row, where: str, id: str, source: str) -> Conversation | list[Conversation]:
  if isinstance(row, dict) and "output" not in row and isinstance(row.get("instances"), list):
    if not row["instances"]:
      raise RecordError("'instances' is empty", where, reason="empty_turn")
    return [convert({"instruction": row.get("instruction"), **inst} if isinstance(inst, dict) else inst,
                    f"{where}/instances[{j}]", f"{id}/{j}", source) for j, inst in enumerate(row["instances"])]
  instruction = field(row, "instruction", where)
  extra = field(row, "input", where, required=False)
  output = field(row, "output", where)
  user = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()
  return make(id, source, [("user", user), ("assistant", output.strip())], where, has_input=bool(extra.strip()))
