"""FLAN-style records: {"inputs", "targets"} (plus optional task fields kept in meta)."""

from __future__ import annotations

from telugu_jax.data.readers.common import field, make
from telugu_jax.data.records import Conversation

_META = ("task_name", "_task_name", "task_source", "_task_source", "template_type", "_template_type")


def convert(row, where: str, id: str, source: str) -> Conversation:
  inputs = field(row, "inputs", where)
  targets = field(row, "targets", where)
  meta = {k.lstrip("_"): row[k] for k in _META if isinstance(row.get(k), str)}
  return make(id, source, [("user", inputs.strip()), ("assistant", targets.strip())], where, **meta)
