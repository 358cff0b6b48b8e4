"""The `read` stage: upstream instruction data -> `Conversation` JSONL.

    python -m telugu_jax.data read --format auto --in alpaca_data.json --out runs/data/alpaca

Formats (field names exactly as upstream): alpaca, dolly, oasst, flan, chat, sharegpt, interactions
(IndicAlign pair lists), records (our own JSONL), or auto (decided per input from its first row, after
the column mapping below). Ids are `{source}/{native id}` where the data has one, else
`{source}/{input index}/{row}`.

Column layouts (readers/columns.py): `--where COLUMN=VALUE` keeps only matching rows of multilingual sets
(the rest are counted as `filtered`); `--lang-columns auto|te|en|translit|both` picks one language of
side-by-side bilingual columns (auto: Telugu), and `both` adds en->te and te->en translation tasks;
`--fields FIELD=COLUMN,...` maps any column onto a schema field. What each file used is in
summary.json under `columns`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from telugu_jax.data.readers import alpaca, chat, dolly, flan
from telugu_jax.data.readers.columns import (
  LANG_CHOICES,
  ColumnPlan,
  parse_fields,
  parse_where,
  plan_columns,
  translation_tasks,
)
from telugu_jax.data.readers.files import BadRow, file_format, first_row, iter_rows, row_id
from telugu_jax.data.readers.oasst import read_oasst
from telugu_jax.data.records import Conversation, RecordError
from telugu_jax.data.stage import Stage, cached, hash_files

FORMATS = ("auto", "alpaca", "dolly", "oasst", "flan", "chat", "sharegpt", "interactions", "records")


def _records(row, where: str, id: str, source: str) -> Conversation:
  return Conversation.from_dict(row, where)


CONVERTERS: dict[str, Callable[..., Conversation]] = {
    "alpaca": alpaca.convert, "dolly": dolly.convert, "flan": flan.convert,
    "chat": chat.convert_chat, "sharegpt": chat.convert_sharegpt, "interactions": chat.convert_interactions,
    "records": _records}


def detect_format(row: Any) -> str | None:
  """The schema a row is in, judged by its field names; None when it fits none."""
  if not isinstance(row, dict):
    return None
  keys = set(row)
  if "conversations" in keys:
    return "sharegpt"
  if "messages" in keys:
    return "chat"
  if "interactions" in keys:
    return "interactions"
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


def planned_rows(stage: Stage, path: str, plan: ColumnPlan, split: str | None
                 ) -> Iterator[tuple[int, str, Any]]:
  """(index in file, where, row) for the rows `plan` does not filter out; filtered rows are counted in and
  as filtered here. Shared with the preference reader."""
  for i, (where, row) in enumerate(iter_rows(path, split=split)):
    if plan.where and not isinstance(row, BadRow) and (label := plan.filtered_by(row)):
      stage.count_in()
      stage.filter(label)
      continue
    yield i, where, row


def file_plan(stage: Stage, path: str, *, split: str | None, lang_columns: str, fields: dict, where: dict
              ) -> ColumnPlan:
  """The column plan for one input (from its first row), recorded in the summary's `columns`."""
  plan = plan_columns(first_row(path, split=split), lang_columns, fields, where, path=os.fspath(path))
  stage.stats.setdefault("columns", {})[os.fspath(path)] = plan.describe()
  if where and stage.filtered is None:
    stage.filtered = Counter()
  return plan


def _mapped(rows: Iterable[tuple[int, str, Any]], plan: ColumnPlan) -> Iterator[tuple[str, Any]]:
  for _, where, row in rows:
    if isinstance(row, BadRow):
      yield where, row
      continue
    try:
      yield where, plan.apply(row, where)
    except RecordError as e:
      yield where, BadRow(str(e).removeprefix(f"{where}: "), row)


def read_into(stage: Stage, paths: Sequence[str], fmt: str = "auto", source: str | None = None, *,
              split: str | None = None, system: str = "fold", all_paths: bool = False,
              langs: Sequence[str] = (), fields: Any = None, lang_columns: str = "auto", where: Any = ()) -> None:
  """Read every input into `stage`; malformed rows are rejected with file:line, never raised."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
  if lang_columns not in LANG_CHOICES:
    raise ValueError(f"--lang-columns {lang_columns!r}: choose one of {LANG_CHOICES}")
  fields, filters = parse_fields(fields), parse_where(where)
  skipped: Counter[str] = Counter()
  for k, path in enumerate(paths):
    src = source or os.path.basename(os.fspath(path).rstrip("/")).split(".")[0]
    plan = file_plan(stage, path, split=split, lang_columns=lang_columns, fields=fields, where=filters)
    this_fmt = file_format(path, fmt, lambda row, plan=plan: detect_format(plan.apply(row, "")), FORMATS[1:],
                           split=split, empty="records")
    rows = planned_rows(stage, path, plan, split)
    stage.stats.setdefault("formats", {})[os.fspath(path)] = this_fmt
    if this_fmt == "oasst":
      read_oasst(_mapped(rows, plan), stage, src, all_paths=all_paths, langs=tuple(langs))
      continue
    convert = CONVERTERS[this_fmt]
    extra = {"system_mode": system} if this_fmt in ("chat", "sharegpt", "interactions") else {}
    for i, where_, row in rows:
      stage.count_in()
      if isinstance(row, BadRow):
        stage.reject("malformed", raw=row.raw, where=where_, detail=row.message)
        continue
      try:
        mapped = plan.apply(row, where_)
        rid = row_id(src, _native_id(mapped), i, k, len(paths))
        conv = convert(mapped, where_, rid, src, **extra)
        convs = conv if isinstance(conv, list) else [conv]
        if lang_columns == "both":
          try:
            en = convert(plan.apply(row, where_, english=True), where_, rid, src, **extra)
            tasks, why = translation_tasks(convs[0], en[0] if isinstance(en, list) else en, where_)
          except RecordError as e:
            tasks, why = [], [f"english side: {e.reason}"]
          convs += tasks
          skipped.update(why)
        for c in convs:
          stage.check(c)  # text that cannot be encoded rejects the whole row, before any of it is kept
        for j, c in enumerate(convs):
          stage.keep(c, consumed=int(j == 0))  # one input row, however many conversations it gives
      except RecordError as e:
        stage.reject(e.reason, raw=row, where=where_, detail=str(e).removeprefix(f"{where_}: "))
  if lang_columns == "both":
    stage.stats["translation_tasks_not_made"] = dict(skipped)


def run_read(paths: Sequence[str], out_dir: str, fmt: str = "auto", source: str | None = None, *,
             progress: bool = True, force: bool = False, **options) -> dict:
  """The read stage: writes out_dir/{records,rejected}.jsonl and summary.json; returns the summary."""
  local = [p for p in paths if os.path.exists(p)]
  ihash = hash_files(local, {"stage": "read", "version": 2, "fmt": fmt, "source": source, "paths": list(paths),
                             **options})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("read", out_dir, input_hash=ihash, progress=progress, inputs=paths) as stage:
    read_into(stage, paths, fmt, source, **options)
  return stage.final
