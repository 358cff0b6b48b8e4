"""Rows out of files: JSON lists, JSONL, CSV/TSV (a header row; quoted fields may span lines), gzip of any of
these, Parquet, a `datasets` directory made with `save_to_disk`, or (for users with hub access) a dataset
name given to `datasets.load_dataset`.

Each row comes with `where` ("file:line", "file[#item]", "file:row N") so a bad record can be named; in a
CSV/TSV file N counts data rows from 1 (the header is not a row), in Parquet from 0.
A line that is not valid JSON, or a CSV row with more or fewer cells than the header, comes back as a
`BadRow`, never an exception half-way through a file. Bytes that are not UTF-8 are kept (as U+DC80..U+DCFF,
Python's `surrogateescape`) and the row that holds them is rejected as `invalid_unicode` by the reader,
with its file:line, like a JSON string holding a lone surrogate.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class BadRow:
  """A row that could not be parsed at all; the reader rejects it with `message`."""

  message: str
  raw: str


def _read_text(path: str) -> str:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
    return f.read()


def _is_dataset_dir(path: str) -> bool:
  return os.path.isdir(path) and any(
      os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _iter_jsonl_lines(path: str, lines) -> Iterator[tuple[str, Any]]:
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    try:
      yield where, json.loads(line)
    except json.JSONDecodeError as e:
      yield where, BadRow(f"invalid JSON ({e.msg} at column {e.colno})", line)


def _iter_json(path: str) -> Iterator[tuple[str, Any]]:
  text = _read_text(path)
  stripped = text.lstrip()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    if stripped.startswith("{"):  # a .json file that is really JSON lines: common enough to accept
      yield from _iter_jsonl_lines(path, text.splitlines())
      return
    raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). Fix the file, or "
                     "write one JSON object per line and name it .jsonl so bad lines are rejected one by one") from None
  if isinstance(data, list):
    for i, row in enumerate(data):
      yield f"{path}[#{i}]", row
  else:
    yield path, data


def _iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
  import pyarrow.parquet as pq

  n = 0
  for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
    for row in batch.to_pylist():
      yield f"{path}:row {n}", row
      n += 1


def _iter_csv(path: str, delimiter: str) -> Iterator[tuple[str, Any]]:
  csv.field_size_limit(1 << 30)  # the default 128 KB is smaller than some answers
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
      return
    if len(set(header)) != len(header):
      raise ValueError(f"{path}: the header row names a column twice ({header})")
    for n, cells in enumerate(reader, 1):
      if not cells or (len(cells) == 1 and not cells[0].strip() and len(header) > 1):
        continue  # a blank line
      where = f"{path}:row {n}"
      if len(cells) != len(header):
        yield where, BadRow(f"{len(cells)} cells, the header has {len(header)}", delimiter.join(cells)[:2000])
      else:
        yield where, dict(zip(header, cells, strict=True))


def _iter_dataset(ds, name: str) -> Iterator[tuple[str, Any]]:
  import datasets

  splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
  for split, d in splits:
    label = f"{name}[{split}]" if split else name
    for i, row in enumerate(d):
      yield f"{label}#{i}", row


def iter_rows(path: str | os.PathLike, split: str | None = None) -> Iterator[tuple[str, Any]]:
  """(where, row) pairs from one input; see the module docstring for what an input can be."""
  path = os.fspath(path)
  if _is_dataset_dir(path):
    import datasets

    ds = datasets.load_from_disk(path)
    if split is not None and isinstance(ds, datasets.DatasetDict):
      ds = ds[split]
    yield from _iter_dataset(ds, path)
    return
  if not os.path.exists(path):
    if "/" in path and not path.startswith((".", "/")) and path.count("/") == 1:
      import datasets  # a hub name such as "databricks/databricks-dolly-15k"

      try:
        ds = datasets.load_dataset(path, split=split)
      except Exception as e:  # noqa: BLE001 -- offline, unknown name, gated: all end the same way for the user
        raise FileNotFoundError(f"{path}: no such file, and loading it as a hub dataset failed ({e}). Download "
                                "the data and pass the file or a save_to_disk directory instead") from e
      yield from _iter_dataset(ds, path)
      return
    raise FileNotFoundError(f"{path}: no such file or directory")
  base = path[:-3] if path.endswith(".gz") else path
  if base.endswith(".parquet"):
    yield from _iter_parquet(path)
  elif base.endswith(".json"):
    yield from _iter_json(path)
  elif base.endswith((".csv", ".tsv")):
    yield from _iter_csv(path, "\t" if base.endswith(".tsv") else ",")
  elif base.endswith((".jsonl", ".ndjson")):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
      yield from _iter_jsonl_lines(path, f)
  else:
    raise ValueError(f"{path}: unknown file type; expected .json, .jsonl, .csv, .tsv, .parquet (optionally .gz) "
                     "or a save_to_disk directory")


def first_row(path: str | os.PathLike, split: str | None = None) -> Any:
  """The first readable row of an input (None when it has none)."""
  return next((r for _, r in iter_rows(path, split=split) if not isinstance(r, BadRow)), None)


def file_format(path: str | os.PathLike, fmt: str, detect: Callable[[Any], str | None], formats: Sequence[str], *,
                split: str | None = None, empty: str, what: str = "schema") -> str:
  """`fmt`, or for "auto" the format `detect` sees in the file's first readable row (`empty` when the file has
  none: its bad rows are rejected one by one by any converter). Shared by the instruction and preference readers."""
  if fmt != "auto":
    return fmt
  first = next(((w, r) for w, r in iter_rows(path, split=split) if not isinstance(r, BadRow)), None)
  if first is None:
    return empty
  found = detect(first[1])
  if found is None:
    keys = sorted(first[1])[:10] if isinstance(first[1], dict) else type(first[1]).__name__
    raise ValueError(f"{first[0]}: cannot tell the {what} from the first row ({keys}); pass --format "
                     f"(one of {formats})")
  return found


def row_id(source: str, native: str | None, index: int, file_index: int, n_files: int) -> str:
  """A record id: the row's own id when it has one, else its position (with the file's when there are several)."""
  if native is not None:
    return f"{source}/{native}"
  return f"{source}/{index}" if n_files == 1 else f"{source}/{file_index}/{index}"
