"""Preference records: a prompt (a conversation ending with a user turn) + a `chosen` and a `rejected` answer.

    python -m telugu_jax.dpo read --in hh.jsonl.gz --out runs/prefs/hh [--format auto|hh|ultrafeedback|pairs]

One JSONL line per pair (our own format, `pairs`):
    {"id": str, "source": str, "prompt": [{"role": "user"|"assistant", "content": str}, ... user],
     "chosen": str, "rejected": str, "meta": {...}}

Readers for the common upstream shapes, field names as upstream writes them:
  hh             Anthropic HH-RLHF: `chosen` and `rejected` are whole dialogues in one string,
                 "\\n\\nHuman: ...\\n\\nAssistant: ...". Both must share every turn but the last assistant one.
  ultrafeedback  UltraFeedback-binarised (and TRL's preference format): `prompt` (a string or a message
                 list; `question` or `instruction` are read as the prompt too) and `chosen`/`rejected` as
                 message lists (the whole conversation, or only the answer) or strings;
                 `score_chosen`/`score_rejected` when present.
Bilingual sets (`en_question, en_chosen, en_rejected` next to `te_question, ...` or `telugu_*`) are read in
Telugu by default; `--lang-columns en|te|translit`, `--fields prompt=COL,...` and `--where COL=VALUE` work
as in the SFT reader (telugu_jax/data/readers/columns.py).

The read stage runs on the shared stage runner (telugu_jax/data/stage.py): every input row ends either
in records.jsonl or in rejected.jsonl with a reason, summary.json holds the counts, and a rerun with the
same inputs is a cache hit. Reasons: malformed (not JSON, missing or mistyped fields), bad_turns (roles
that do not alternate user-first, a prompt that does not end with the user), empty_turn (an empty
turn or answer), forged_role_marker (a line starting with `user:`/`assistant:` would forge a turn in our
template), prompt_mismatch (chosen and rejected answer different conversations), identical_responses,
tied_scores (UltraFeedback: no preference to learn).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from telugu_jax.data.readers.common import make
from telugu_jax.data.readers.files import BadRow, file_format, iter_rows, row_id
from telugu_jax.data.records import RecordError, Turn, check_text
from telugu_jax.data.stage import Stage, cached, hash_files

FORMATS = ("auto", "hh", "ultrafeedback", "pairs")
_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_PROMPT_KEYS = ("prompt", "question", "instruction")
_CHAT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  id: str
  prompt: tuple[Turn, ...]   # alternating, user first and last
  chosen: str
  rejected: str
  source: str = ""
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return {"id": self.id, "source": self.source, "prompt": [t.to_dict() for t in self.prompt],
            "chosen": self.chosen, "rejected": self.rejected, "meta": self.meta}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False)

  def turns(self, which: str) -> tuple[Turn, ...]:
    """The whole conversation ending in the chosen (`which="chosen"`) or rejected answer."""
    return self.prompt + (Turn("assistant", self.chosen if which == "chosen" else self.rejected),)

  @classmethod
  def from_dict(cls, d: Any, where: str = "") -> PreferencePair:
    if not isinstance(d, dict):
      raise RecordError(f"expected a JSON object, got {type(d).__name__}", where)
    missing = [k for k in ("id", "prompt", "chosen", "rejected") if k not in d]
    if missing:
      raise RecordError(f"missing field(s) {missing} (has {sorted(d)[:8]})", where)
    prompt = d["prompt"]
    if not isinstance(prompt, list) or not all(isinstance(t, dict) and {"role", "content"} <= set(t) for t in prompt):
      raise RecordError("'prompt' must be a list of {'role', 'content'} objects", where)
    for k in ("chosen", "rejected"):
      if not isinstance(d[k], str):
        raise RecordError(f"'{k}' must be a string, got {type(d[k]).__name__}", where)
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
      raise RecordError("'meta' must be an object", where)
    check_text({k: d.get(k) for k in ("id", "source", "prompt", "chosen", "rejected", "meta")}, "pair", where)
    pair = make_pair(str(d["id"]), str(d.get("source", "")), [(t["role"], t["content"]) for t in prompt],
                     d["chosen"], d["rejected"], where)
    return dataclasses.replace(pair, meta=meta)  # the file's meta as it is (no "where" added on reading)


def make_pair(id: str, source: str, prompt: Sequence[tuple[str, Any]], chosen: Any, rejected: Any, where: str,
              **meta) -> PreferencePair:
  """A checked pair: the same checks as an SFT record (telugu_jax.data.readers.common.make) for both
  conversations, plus identical_responses. Failures are `RecordError`s with their reason."""
  for name, value in (("chosen", chosen), ("rejected", rejected)):
    if not isinstance(value, str):
      raise RecordError(f"'{name}' must be a string, got {type(value).__name__}", where)
  for i, (role, content) in enumerate(prompt):
    if not isinstance(content, str):
      raise RecordError(f"prompt turn {i} content must be a string, got {type(content).__name__}", where)
    if role not in ("user", "assistant"):
      raise RecordError(f"prompt turn {i} has role {role!r}; expected 'user' or 'assistant'", where,
                        reason="bad_turns")
  prompt = [(r, c.strip()) for r, c in prompt]
  if not prompt or prompt[-1][0] != "user":
    raise RecordError("the prompt must end with a user turn", where, reason="bad_turns")
  chosen, rejected = chosen.strip(), rejected.strip()
  conv = make(id, source, prompt + [("assistant", chosen)], where, **meta)  # raises with a reason
  make(id, source, prompt + [("assistant", rejected)], where)
  if chosen == rejected:
    raise RecordError("chosen and rejected answers are identical", where, reason="identical_responses")
  return PreferencePair(id=id, prompt=conv.turns[:-1], chosen=chosen, rejected=rejected, source=source,
                        meta=conv.meta)


# ---- upstream shapes ------------------------------------------------------------------------------------

def parse_hh(text: Any, where: str, name: str) -> list[tuple[str, str]]:
  """'\\n\\nHuman: a\\n\\nAssistant: b' -> [("user", "a"), ("assistant", "b")]."""
  if not isinstance(text, str):
    raise RecordError(f"'{name}' must be a string, got {type(text).__name__}", where)
  pieces = _HH_MARKER.split(text)
  if pieces[0].strip():
    raise RecordError(f"'{name}' does not start with 'Human:' ({pieces[0][:40]!r})", where, reason="bad_turns")
  return [(_HH_ROLES[pieces[k]], pieces[k + 1].strip()) for k in range(1, len(pieces) - 1, 2)]


def convert_hh(row: Any, where: str, id: str, source: str) -> PreferencePair:
  if not isinstance(row, dict) or not {"chosen", "rejected"} <= set(row):
    raise RecordError("expected an object with 'chosen' and 'rejected' dialogue strings", where)
  chosen, rejected = parse_hh(row["chosen"], where, "chosen"), parse_hh(row["rejected"], where, "rejected")
  for name, turns in (("chosen", chosen), ("rejected", rejected)):
    if not turns or turns[-1][0] != "assistant":
      raise RecordError(f"'{name}' does not end with an Assistant turn", where, reason="bad_turns")
  if chosen[:-1] != rejected[:-1]:
    raise RecordError("chosen and rejected dialogues differ before their last answer", where,
                      reason="prompt_mismatch")
  return make_pair(id, source, chosen[:-1], chosen[-1][1], rejected[-1][1], where)


def _messages(value: Any, where: str, name: str) -> list[tuple[str, str]]:
  if isinstance(value, str):
    return [("assistant", value)] if name != "prompt" else [("user", value)]
  if not isinstance(value, list):
    raise RecordError(f"'{name}' must be a string or a message list, got {type(value).__name__}", where)
  out = []
  for i, m in enumerate(value):
    if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
      raise RecordError(f"{name}[{i}] must be an object with 'role' and a string 'content'", where)
    role = _CHAT_ROLES.get(str(m["role"]).lower())
    if role is None:
      raise RecordError(f"{name}[{i}] has role {m['role']!r}; expected one of {sorted(_CHAT_ROLES)}", where,
                        reason="bad_turns")
    out.append((role, m["content"]))
  if out and out[0][0] == "system":  # no system slot in the template: folded into the first user turn
    system, rest = out[0][1].strip(), out[1:]
    if rest and rest[0][0] == "user" and system:
      rest[0] = ("user", system + "\n\n" + rest[0][1])
    out = rest
  if any(r == "system" for r, _ in out):
    raise RecordError(f"'{name}' has a system message after the first", where, reason="bad_turns")
  return out


def convert_ultrafeedback(row: Any, where: str, id: str, source: str) -> PreferencePair:
  if not isinstance(row, dict) or not {"chosen", "rejected"} <= set(row):
    raise RecordError("expected an object with 'chosen' and 'rejected'", where)
  sc, sr = row.get("score_chosen"), row.get("score_rejected")
  if isinstance(sc, int | float) and isinstance(sr, int | float) and sc == sr:
    raise RecordError(f"score_chosen == score_rejected == {sc}", where, reason="tied_scores")
  chosen, rejected = _messages(row["chosen"], where, "chosen"), _messages(row["rejected"], where, "rejected")
  for name, turns in (("chosen", chosen), ("rejected", rejected)):
    if not turns or turns[-1][0] != "assistant":
      raise RecordError(f"'{name}' does not end with an assistant message", where, reason="bad_turns")
  key = next((k for k in _PROMPT_KEYS if row.get(k) is not None), None)
  if key is not None:
    prompt = _messages(row[key], where, "prompt")
  else:
    prompt = chosen[:-1]
  # The binarised set repeats the prompt inside chosen/rejected; TRL's format gives only the answer.
  for name, turns in (("chosen", chosen), ("rejected", rejected)):
    if len(turns) > 1 and [(r, c.strip()) for r, c in turns[:-1]] != [(r, c.strip()) for r, c in prompt]:
      raise RecordError(f"the conversation in '{name}' does not match the prompt", where, reason="prompt_mismatch")
  meta = {k: row[k] for k in ("score_chosen", "score_rejected") if isinstance(row.get(k), int | float)}
  return make_pair(id, source, prompt, chosen[-1][1], rejected[-1][1], where, **meta)


def _pairs(row: Any, where: str, id: str, source: str) -> PreferencePair:
  return PreferencePair.from_dict(row, where)


CONVERTERS: dict[str, Callable[..., PreferencePair]] = {"hh": convert_hh, "ultrafeedback": convert_ultrafeedback,
                                                        "pairs": _pairs}


def detect_format(row: Any) -> str | None:
  if not isinstance(row, dict) or not {"chosen", "rejected"} <= set(row):
    return None
  if "id" in row and isinstance(row.get("prompt"), list) and isinstance(row["chosen"], str):
    return "pairs"
  if isinstance(row["chosen"], list) or any(k in row for k in _PROMPT_KEYS):
    return "ultrafeedback"
  if isinstance(row["chosen"], str) and "Human:" in row["chosen"]:
    return "hh"
  return None


def _native_id(row: Any) -> str | None:
  if isinstance(row, dict):
    for k in ("id", "prompt_id"):
      if isinstance(row.get(k), str | int) and str(row[k]):
        return str(row[k])
  return None


# ---- the read stage -------------------------------------------------------------------------------------

def read_into(stage: Stage, paths: Sequence[str], fmt: str = "auto", source: str | None = None, *,
              split: str | None = None, fields: Any = None, lang_columns: str = "auto", where: Any = ()) -> None:
  """Every row of every input into `stage`: kept as a pair or rejected with its reason, never raised."""
  from telugu_jax.data.readers import file_plan, planned_rows
  from telugu_jax.data.readers.columns import parse_fields, parse_where

  if fmt not in FORMATS:
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
  if lang_columns not in ("auto", "te", "en", "translit"):
    raise ValueError(f"--lang-columns {lang_columns!r}: choose auto, te, en or translit (translation tasks from "
                     "both languages are made by the SFT reader)")
  fields, filters = parse_fields(fields), parse_where(where)
  seen: dict[str, int] = {}
  for k, path in enumerate(paths):
    src = source or os.path.basename(os.fspath(path).rstrip("/")).split(".")[0]
    plan = file_plan(stage, path, split=split, lang_columns=lang_columns, fields=fields, where=filters)
    this_fmt = file_format(path, fmt, lambda row, plan=plan: detect_format(plan.apply(row, "")), FORMATS[1:],
                           split=split, empty="pairs", what="preference format")
    stage.stats.setdefault("formats", {})[os.fspath(path)] = this_fmt
    convert = CONVERTERS[this_fmt]
    for i, where_, row in planned_rows(stage, path, plan, split):
      stage.count_in()
      if isinstance(row, BadRow):
        stage.reject("malformed", raw=row.raw, where=where_, detail=row.message)
        continue
      try:
        mapped = plan.apply(row, where_)
        rid = row_id(src, _native_id(mapped), i, k, len(paths))
        if rid in seen:  # ids name rows in rejected.jsonl and splits; a repeated native id gets a suffix
          seen[rid] += 1
          rid = f"{rid}#{seen[rid]}"
        else:
          seen[rid] = 0
        stage.keep(convert(mapped, where_, rid, src))
      except RecordError as e:
        stage.reject(e.reason, raw=row, where=where_, detail=str(e).removeprefix(f"{where_}: "))


def run_read(paths: Sequence[str], out_dir: str, fmt: str = "auto", source: str | None = None, *,
             split: str | None = None, progress: bool = True, force: bool = False, **columns) -> dict:
  """The read stage for preference data: out_dir/{records,rejected}.jsonl and summary.json. `columns`:
  fields, lang_columns, where (see the module docstring)."""
  local = [p for p in paths if os.path.exists(p)]
  ihash = hash_files(local, {"stage": "dpo-read", "version": 2, "fmt": fmt, "source": source, "paths": list(paths),
                             "split": split, **columns})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("dpo-read", out_dir, input_hash=ihash, progress=progress, inputs=paths) as stage:
    read_into(stage, paths, fmt, source, split=split, **columns)
  return stage.final


def iter_pairs(path: str | os.PathLike, on_error: Callable[[RecordError, str], None] | None = None
               ) -> Iterator[PreferencePair]:
  """Pairs from our own JSONL (records.jsonl of the read stage). A bad line raises `RecordError`
  naming file:line, or goes to `on_error(error, raw line)`."""
  for where, row in iter_rows(path):
    try:
      if isinstance(row, BadRow):
        raise RecordError(row.message, where)
      yield PreferencePair.from_dict(row, where)
    except RecordError as e:
      if on_error is None:
        raise
      on_error(e, row.raw if isinstance(row, BadRow) else json.dumps(row, ensure_ascii=False))


def write_pairs(path: str | os.PathLike, pairs: Sequence[PreferencePair]) -> int:
  """Write atomically (temp file + rename)."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for p in pairs:
      f.write(p.to_json() + "\n")
  os.replace(path + ".tmp", path)
  return len(pairs)
