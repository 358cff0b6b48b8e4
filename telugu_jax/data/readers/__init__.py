"""The `read` stage: upstream instruction data -> `Conversation` JSONL.

    python -m telugu_jax.data read --format auto --in alpaca_data.json --out runs/data/alpaca

Formats (field names exactly as upstream): alpaca, dolly, oasst, flan, chat, sharegpt, records (our
own JSONL), or auto (decided per input from its first row). Ids are `{source}/{native id}` where the
data has one, else `{source}/{input index}/{row}`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from telugu_jax.data.readers import alpaca, chat, dolly, flan
from telugu_jax.data.readers.files import BadRow, file_format, iter_rows, row_id
from telugu_jax.data.readers.oasst import read_oasst
from telugu_jax.data.records import Conversation, RecordError
from telugu_jax.data.stage import Stage, cached, hash_files

FORMATS = ("auto", "alpaca", "dolly", "oasst", "flan", "chat", "sharegpt", "records")


def _records(row, where: str, id: str, source: str) -> Conversation:
  return Conversation.from_dict(row, where)


CONVERTERS: dict[str, Callable[..., Conversation]] = {
    "alpaca": alpaca.convert, "dolly": dolly.convert, "flan": flan.convert,
    "chat": chat.convert_chat, "sharegpt": chat.convert_sharegpt, "records": _records}


def detect_format(row: Any) -> str | None:
  """The schema a row is in, judged by its field names; None when it fits none."""
  if not isinstance(row, dict):
    return None
  keys = set(row)
  if "conversations" in keys:
    return "sharegpt"
  if "messages" in keys:
    return "chat"
  if "turns" in keys and "id" in keys:
    return "records"
  if "message_id" in keys or ("prompt" in keys and "message_tree_id" in keys):
    return "oasst"
  if {"inputs", "targets"} <= keys:
    return "flan"
  if {"instruction", "response"} <= keys:
    return "dolly"
  if {"instruction", "output"} <= keys or {"instruction", "instances"} <= keys:
    return "alpaca"
  return None


def _native_id(row: Any) -> str | None:
  if isinstance(row, dict):
    for k in ("id", "conversation_id"):
      if isinstance(row.get(k), str | int) and str(row[k]):
        return str(row[k])
  return None


def read_into(stage: Stage, paths: Sequence[str], fmt: str = "auto", source: str | None = None, *,
              split: str | None = None, system: str = "fold", all_paths: bool = False,
              langs: Sequence[str] = ()) -> None:
  """Read every input into `stage`; malformed rows are rejected with file:line, never raised."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
  for k, path in enumerate(paths):
    src = source or os.path.basename(os.fspath(path).rstrip("/")).split(".")[0]
    this_fmt = file_format(path, fmt, detect_format, FORMATS[1:], split=split, empty="records")
    rows = iter_rows(path, split=split)
    stage.stats.setdefault("formats", {})[os.fspath(path)] = this_fmt
    if this_fmt == "oasst":
      read_oasst(rows, stage, src, all_paths=all_paths, langs=tuple(langs))
      continue
    convert = CONVERTERS[this_fmt]
    extra = {"system_mode": system} if this_fmt in ("chat", "sharegpt") else {}
    for i, (where, row) in enumerate(rows):
      stage.count_in()
      if isinstance(row, BadRow):
        stage.reject("malformed", raw=row.raw, where=where, detail=row.message)
        continue
      rid = row_id(src, _native_id(row), i, k, len(paths))
      try:
        conv = convert(row, where, rid, src, **extra)
        for j, c in enumerate(conv if isinstance(conv, list) else [conv]):
          stage.keep(c, consumed=int(j == 0))  # one input row, however many conversations it gives
      except RecordError as e:
        stage.reject(e.reason, raw=row, where=where, detail=str(e).removeprefix(f"{where}: "))


def run_read(paths: Sequence[str], out_dir: str, fmt: str = "auto", source: str | None = None, *,
             progress: bool = True, force: bool = False, **options) -> dict:
  """The read stage: writes out_dir/{records,rejected}.jsonl and summary.json; returns the summary."""
  local = [p for p in paths if os.path.exists(p)]
  ihash = hash_files(local, {"stage": "read", "fmt": fmt, "source": source, "paths": list(paths), **options})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("read", out_dir, input_hash=ihash, progress=progress) as stage:
    read_into(stage, paths, fmt, source, **options)
  return stage.final
