"""The shared stage runner: every data stage writes the same three files and keeps the same books.

    DIR/records.jsonl   the `Conversation`s the stage kept (or produced)
    DIR/rejected.jsonl  one line per input unit it dropped: reason, detail, where, id, duplicate_of, and
                        the record (or the raw input) itself, so nothing is lost silently
    DIR/summary.json    in, out, consumed, rejected per reason, the input hash, extra stats; written last,
                        atomically, so its presence means "this stage finished"

All-or-nothing to readers: while it runs, a stage writes `records.jsonl.part` and `rejected.jsonl.part`
and renames them into place just before its summary.json; a stage that fails (or finds no input at all:
an empty input is a user error, not 0 records) publishes nothing. A stage refuses an input file from a
stage directory whose summary.json is missing (`check_finished`): that stage did not finish, and its
records are not all there.

Accounting: a stage counts each input unit as it reads it (`count_in`), and each unit ends either in
an output record (`keep`, which may consume several units, e.g. OASST messages on one path) or in
`rejected.jsonl` (`reject`), or, for a reader with row filters (`--where language_code=tel`), in the
summary's `filtered` counts (`filter`): rows the user asked not to read are not rejects. `finish` checks
in == consumed + rejected + filtered and refuses to write a summary otherwise: a unit that vanished is a
bug, not a statistic.

Restart: with `resume=True`, a killed stage's partial files are kept (a half-written last line is cut
off) and `done(key)` tells the caller which inputs were already handled, so a 1:1 stage (translate,
clean) picks up where it stopped. Stages that need all their input at once (dedupe, mix, readers)
simply start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from telugu_jax.data.records import Conversation, check_text, iter_jsonl
from telugu_jax.errors import UserError

RECORDS, REJECTED, SUMMARY = "records.jsonl", "rejected.jsonl", "summary.json"
PART = ".part"          # suffix of a running stage's files
MARKER = ".stage.json"  # which stage and inputs the files in a directory come from


class AccountingError(RuntimeError):
  """in != consumed + rejected: some input unit was neither kept nor rejected."""


class StageInputError(UserError, ValueError):
  """An input the stage cannot take: empty, or the output of a stage that did not finish."""


def check_finished(paths: Iterable[str | os.PathLike]) -> None:
  """Refuse (one line) an input file that lies in a stage directory whose stage did not finish: its
  records.jsonl may hold only part of what the stage would write, and its drops are in no rejected.jsonl."""
  for p in paths:
    p = os.fspath(p)
    d = os.path.dirname(os.path.abspath(p))
    if os.path.isdir(p) or not (os.path.exists(os.path.join(d, MARKER)) or os.path.exists(p + PART)):
      continue
    if not is_complete(d):
      name = "a stage"
      try:
        with open(os.path.join(d, MARKER), encoding="utf-8") as f:
          name = f"the {json.load(f).get('stage', '?')} stage"
      except (OSError, ValueError):
        pass
      raise StageInputError(f"{p}: {name} that writes {d} did not finish (no {SUMMARY}), so this file may hold "
                            "only part of its records; run that stage again until it prints its summary, then rerun "
                            "this one")


def hash_files(paths: Iterable[str | os.PathLike], extra: Any = None) -> str:
  """sha256 over file contents (directories: every file in them, sorted) and a JSON-able `extra`."""
  h = hashlib.sha256()
  for p in paths:
    p = os.fspath(p)
    files = ([os.path.join(d, f) for d, _, fs in sorted(os.walk(p)) for f in sorted(fs)] if os.path.isdir(p)
             else [p])
    for f in files:
      h.update(os.path.relpath(f, p).encode() if os.path.isdir(p) else b"")
      with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
          h.update(chunk)
  h.update(json.dumps(extra, sort_keys=True, default=str).encode())
  return h.hexdigest()


def load_summary(out_dir: str | os.PathLike) -> dict | None:
  path = os.path.join(out_dir, SUMMARY)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError:  # cut short by hand or by a full disk: the stage counts as not finished
    return None


def is_complete(out_dir: str | os.PathLike, input_hash: str | None = None) -> bool:
  s = load_summary(out_dir)
  return bool(s and s.get("complete") and (input_hash is None or s.get("input_hash") == input_hash))


def cached(out_dir: str | os.PathLike, input_hash: str) -> dict | None:
  """The summary of a finished run of this stage with these exact inputs, else None (so: run it)."""
  if is_complete(out_dir, input_hash):
    s = load_summary(out_dir)
    s["cached"] = True
    return s
  return None


def _cut_partial_line(path: str) -> None:
  """A killed writer may leave a line without its newline; drop that fragment."""
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def json_line(obj: Any) -> str:
  """One JSON line of readable UTF-8; a character that cannot be encoded (a lone surrogate, or an undecodable
  byte kept as one) is written as its \\u escape, so a rejected row is never lost and never crashes the writer."""
  line = json.dumps(obj, ensure_ascii=False, default=str)
  # A surrogate can only sit inside a JSON string, where its \\uXXXX escape reads back as the same character.
  return line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n"


def format_table(summary: dict) -> str:
  rows = [("in", summary["in"]), ("out", summary["out"])]
  if summary.get("consumed", summary["out"]) != summary["out"]:
    rows.append(("consumed (in units used by out)", summary["consumed"]))
  rows += [(f"filtered: {r}", n) for r, n in sorted(summary.get("filtered", {}).items(), key=lambda kv: -kv[1])]
  rows += [(f"rejected: {r}", n) for r, n in sorted(summary["rejected"].items(), key=lambda kv: -kv[1])]
  width = max(len(r[0]) for r in rows)
  lines = [f"[{summary['stage']}] {summary.get('out_dir', '')}"]
  lines += [f"  {name:<{width}}  {n:>9,}" for name, n in rows]
  return "\n".join(lines)


class Stage:
  """Context manager around one stage run; see the module docstring."""

  def __init__(self, name: str, out_dir: str | os.PathLike, *, input_hash: str | None = None, resume: bool = False,
               progress: bool = True, total: int | None = None, unit: str = "rec", retry: tuple[str, ...] = (),
               inputs: Sequence[str | os.PathLike] = (), allow_empty: bool = False):
    """`retry`: rejection reasons that a resumed run tries again (e.g. translate_failed after an outage).
    `inputs`: the input files, checked to come from finished stages and named when they hold nothing;
    `allow_empty`: no input unit at all is fine (a stage that makes its records, e.g. synth)."""
    self.name, self.out_dir, self.input_hash, self.retry = name, os.fspath(out_dir), input_hash, retry
    self.inputs, self.allow_empty = [os.fspath(p) for p in inputs], allow_empty
    self.resume, self.progress, self.total, self.unit = resume, progress, total, unit
    self.n_in = self.n_out = self.n_consumed = 0
    self.rejected: Counter[str] = Counter()
    self.filtered: Counter[str] | None = None  # a Counter once a reader says it filters rows
    self.stats: dict[str, Any] = {}
    self._done: set[str] = set()
    self._bar = None

  @property
  def records_path(self) -> str:
    """Where the kept records are written while the stage runs (renamed to records.jsonl at the end)."""
    return os.path.join(self.out_dir, RECORDS + PART)

  @property
  def rejected_path(self) -> str:
    return os.path.join(self.out_dir, REJECTED + PART)

  def __enter__(self) -> Stage:
    check_finished(self.inputs)
    os.makedirs(self.out_dir, exist_ok=True)
    summary = os.path.join(self.out_dir, SUMMARY)
    if os.path.exists(summary):
      os.remove(summary)  # from here on the directory is "in progress"
    mode = "w"
    marker = os.path.join(self.out_dir, MARKER)
    same = False
    if os.path.exists(marker):
      try:
        with open(marker, encoding="utf-8") as f:
          same = json.load(f).get("input_hash") == self.input_hash
      except ValueError:
        same = False
    for final, part in ((RECORDS, self.records_path), (REJECTED, self.rejected_path)):
      final = os.path.join(self.out_dir, final)
      if not same and os.path.exists(final):
        os.remove(final)  # made from other inputs: never to be mistaken for this run's output
      elif same and self.resume and not os.path.exists(part) and os.path.exists(final):
        os.replace(final, part)  # files of an unfinished run from before .part names: carry on from them
    if same and self.resume and os.path.exists(self.records_path) and os.path.exists(self.rejected_path):
      self._load_partial()
      mode = "a"
    with open(marker, "w", encoding="utf-8") as f:
      json.dump({"stage": self.name, "input_hash": self.input_hash}, f)
    self._rec_f = open(self.records_path, mode, encoding="utf-8")
    self._rej_f = open(self.rejected_path, mode, encoding="utf-8")
    self._t0 = time.time()
    if self.progress:
      from tqdm import tqdm

      self._bar = tqdm(total=self.total, desc=self.name, unit=self.unit, file=sys.stderr, dynamic_ncols=True,
                       initial=self.n_in)
    return self

  def _load_partial(self) -> None:
    """Re-count what a killed run already wrote, so the books stay right after a restart."""
    for path in (self.records_path, self.rejected_path):
      _cut_partial_line(path)
    with open(self.records_path, encoding="utf-8") as f:
      for line in f:
        d = json.loads(line)
        self._done.add(d["id"])
        self.n_out += 1  # resumable stages are 1:1, so one record is one input unit
        self.n_consumed += 1
        self.n_in += 1
    with open(self.rejected_path, encoding="utf-8") as f:
      lines = f.readlines()
    if self.retry:
      keep = [line for line in lines if json.loads(line)["reason"] not in self.retry]
      if len(keep) != len(lines):
        with open(self.rejected_path, "w", encoding="utf-8") as f:
          f.writelines(keep)
        self.stats["retried"] = len(lines) - len(keep)
      lines = keep
    for line in lines:
      d = json.loads(line)
      if d.get("key") is not None:
        self._done.add(d["key"])
      self.rejected[d["reason"]] += 1
      self.n_in += 1
    self.stats["resumed_from"] = self.n_in

  def done(self, key: str) -> bool:
    """True when a previous (killed) run already kept or rejected the input with this key."""
    return key in self._done

  def read(self, paths: Sequence[str | os.PathLike]) -> Iterator[Conversation]:
    """The conversations of `paths`, in order. A malformed line is counted in and rejected here (reason
    `malformed` or `invalid_unicode`, with file:line), once even across a resumed run; callers count in what
    they receive. An input from a stage that did not finish is refused before anything is read."""
    check_finished(paths)
    self.inputs = self.inputs or [os.fspath(p) for p in paths]
    for path in paths:
      def bad_line(err, line):
        if self.done(err.where):  # rejected by the run that was killed
          return
        self.count_in()
        self.reject(err.reason, raw=line.rstrip("\n"), where=err.where, detail=str(err), key=err.where)

      yield from iter_jsonl(path, on_error=bad_line)

  def count_in(self, n: int = 1) -> None:
    self.n_in += n
    if self._bar is not None:
      self._bar.update(n)

  @staticmethod
  def check(record: Conversation) -> str:
    """`record` as its JSON line, or `RecordError(reason="invalid_unicode")` when some text in it cannot be
    written as UTF-8 (readers call this before keeping anything of an input row, and reject the row)."""
    line = record.to_json()
    try:
      line.encode("utf-8")
    except UnicodeEncodeError:
      check_text(record.to_dict(), f"record {record.id!r}")
      raise  # check_text found nothing: a bug, keep the traceback
    return line

  def keep(self, record: Conversation, consumed: int = 1) -> None:
    """Write a kept record; one whose text cannot be encoded raises RecordError (see `check`) and writes nothing."""
    self._rec_f.write(self.check(record) + "\n")
    self.n_out += 1
    self.n_consumed += consumed

  def reject(self, reason: str, *, record: Conversation | None = None, raw: Any = None, where: str = "",
             detail: str = "", duplicate_of: str | None = None, key: str | None = None,
             extra: dict[str, Any] | None = None) -> None:
    """`extra`: fields of the rejected row beyond the standard ones (e.g. clean's language score)."""
    row: dict[str, Any] = {"reason": reason, **(extra or {})}
    if detail:
      row["detail"] = detail
    if where:
      row["where"] = where
    if record is not None:
      row["id"] = record.id
    if duplicate_of is not None:
      row["duplicate_of"] = duplicate_of
    key = key if key is not None else (record.id if record is not None else None)
    if key is not None:
      row["key"] = key
    if record is not None:
      row["record"] = record.to_dict()
    elif raw is not None:
      row["raw"] = raw
    self._rej_f.write(json_line(row))
    self.rejected[reason] += 1

  def filter(self, label: str) -> None:
    """Count an input unit that a row filter (`label`, e.g. "language_code=tel") left out."""
    if self.filtered is None:
      self.filtered = Counter()
    self.filtered[label] += 1

  def flush(self) -> None:
    self._rec_f.flush()
    self._rej_f.flush()

  def summary(self) -> dict:
    return {"stage": self.name, "out_dir": self.out_dir, "in": self.n_in, "out": self.n_out,
            "consumed": self.n_consumed, "rejected": dict(self.rejected), "input_hash": self.input_hash,
            "seconds": round(time.time() - self._t0, 3), **self.stats,
            **({"filtered": dict(self.filtered)} if self.filtered is not None else {})}

  def __exit__(self, exc_type, exc, tb) -> None:
    if self._bar is not None:
      self._bar.close()
    self._rec_f.close()
    self._rej_f.close()
    if exc_type is not None:
      return  # partial files stay for a resume; no summary means "not finished"
    if self.n_in == 0 and not self.allow_empty:
      raise StageInputError(f"{', '.join(self.inputs) or 'the input'}: no records to {self.name} (the input is empty); "
                            "check the path, or the stage or download that made it")
    s = self.summary()
    n_rej, n_filt = sum(self.rejected.values()), sum((self.filtered or {}).values())
    if self.n_in != self.n_consumed + n_rej + n_filt:
      raise AccountingError(f"stage {self.name}: {self.n_in} in but {self.n_consumed} consumed + {n_rej} rejected + "
                            f"{n_filt} filtered; some input was neither kept nor rejected (a bug in the stage)")
    s["complete"] = True
    os.replace(self.records_path, os.path.join(self.out_dir, RECORDS))
    os.replace(self.rejected_path, os.path.join(self.out_dir, REJECTED))
    tmp = os.path.join(self.out_dir, SUMMARY + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(s, f, ensure_ascii=False, indent=1)
    os.replace(tmp, os.path.join(self.out_dir, SUMMARY))
    if self.progress:
      print(format_table(s), file=sys.stderr)
    self.final = s
