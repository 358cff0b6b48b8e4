"""Column layouts as Telugu datasets publish them, mapped onto the schemas the readers know.

Three things happen to a row before its schema's converter sees it, in this order:

  where     `--where language_code=tel` (repeatable; one key given twice means either value; values are
            compared as text, so `template_id=0` matches an integer 0): rows of a multilingual set (Aya)
            that do not match are *filtered*: counted in the summary's `filtered`, neither kept nor
            rejected. A key that is not a column of the file is an error, not a silent 0.
  language  a row that carries one field in several languages (`instruction` next to `telugu_instruction`
            and `telugu_transliterated_instruction`; `en_question` next to `te_question`) gets the
            variant of the chosen language under the plain name. `auto` takes the Telugu-script one when
            there is one, and never English when Telugu is there; `en`, `te`, `translit` choose; `both`
            takes Telugu and also makes translation tasks from the pair (readers/__init__.py).
            Markers: prefix `telugu_`, `te_`, `tel_` / `en_`, `english_`, `eng_` / `telugu_transliterated_`,
            `transliterated_`, `translit_`, or the same as suffixes (`_te`, `_en`, `_translit`, ...). An
            unmarked column next to a Telugu one is taken to be English, next to only an English one Telugu.
  fields    `--fields instruction=telugu_instruction,output=telugu_output`: schema field = file column,
            taken from the row as read (before the language step), so any layout maps onto a known schema.

The plan is made once per file from its first row's columns and recorded in summary.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from telugu_jax.data.readers.common import make
from telugu_jax.data.records import Conversation, RecordError

LANG_CHOICES = ("auto", "te", "en", "translit", "both")
# Longest first: "telugu_transliterated_" must win over "telugu_".
_MARKERS = (
    ("translit", ("telugu_transliterated_", "te_transliterated_", "transliterated_", "te_translit_", "translit_"),
     ("_telugu_transliterated", "_te_transliterated", "_transliterated", "_te_translit", "_translit")),
    ("te", ("telugu_", "tel_", "te_"), ("_telugu", "_tel", "_te")),
    ("en", ("english_", "eng_", "en_"), ("_english", "_eng", "_en")),
)


def parse_fields(spec: str | Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
  """"a=x,b=y" (or a mapping, or a list of "a=x") -> {"a": "x", "b": "y"}: schema field -> file column."""
  if not spec:
    return {}
  if isinstance(spec, Mapping) or hasattr(spec, "items"):  # a dict, or an ml_collections ConfigDict
    return {str(k): str(v) for k, v in spec.items()}
  items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
  out = {}
  for item in (i.strip() for i in items):
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"--fields {item!r}: write FIELD=COLUMN, e.g. instruction=telugu_instruction")
    k, v = (p.strip() for p in item.split("=", 1))
    if not k or not v:
      raise ValueError(f"--fields {item!r}: both the field and the column need a name")
    out[k] = v
  return out


def parse_where(specs: Iterable[str] | Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
  """["language_code=tel", "script=Telu"] -> {"language_code": ("tel",), "script": ("Telu",)}."""
  if not specs:
    return {}
  if isinstance(specs, str):
    specs = [specs]
  if isinstance(specs, Mapping) or hasattr(specs, "items"):
    return {str(k): tuple(str(x) for x in (v if isinstance(v, list | tuple) else [v])) for k, v in specs.items()}
  out: dict[str, tuple[str, ...]] = {}
  for s in specs:
    if "=" not in s:
      raise ValueError(f"--where {s!r}: write COLUMN=VALUE, e.g. language_code=tel")
    k, v = (p.strip() for p in s.split("=", 1))
    out[k] = out.get(k, ()) + (v,)
  return out


def split_column(name: str) -> tuple[str, str | None]:
  """"telugu_instruction" -> ("instruction", "te"); "instruction" -> ("instruction", None)."""
  low = name.lower()
  for lang, prefixes, suffixes in _MARKERS:
    for p in prefixes:
      if low.startswith(p) and len(name) > len(p):
        return name[len(p):], lang
    for s in suffixes:
      if low.endswith(s) and len(name) > len(s):
        return name[:-len(s)], lang
  return name, None


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
  """How one file's rows become schema rows; `describe()` goes into summary.json."""

  lang: str                                   # te | en | translit | none (no language variants in the file)
  columns: dict[str, str]                     # plain name -> the file's column it is read from (language step)
  fields: dict[str, str]                      # schema field -> file column (--fields)
  where: dict[str, tuple[str, ...]]
  english: dict[str, str] = dataclasses.field(default_factory=dict)  # the English plan, for --lang-columns both

  def filtered_by(self, row: Any) -> str | None:
    """The first `where` condition the row fails ("language_code=tel"), or None when it passes."""
    for k, values in self.where.items():
      got = row.get(k) if isinstance(row, dict) else None
      if str(got) not in values:
        return f"{k}={'|'.join(values)}"
    return None

  def apply(self, row: Any, where: str, english: bool = False) -> Any:
    """The row with the chosen language's columns (or the English ones) and --fields under their schema names."""
    if not isinstance(row, dict) or (not self.columns and not self.fields and not english):
      return row
    out = dict(row)
    for name, col in (self.english if english else self.columns).items():
      out[name] = row.get(col)
    for name, col in self.fields.items():
      if col not in row:
        raise RecordError(f"--fields {name}={col}: the row has no column {col!r} (has {sorted(row)[:10]})", where)
      out[name] = row[col]
    return out

  def describe(self) -> dict:
    d: dict[str, Any] = {"lang": self.lang}
    if self.english:
      d["translation_tasks"] = {"english_columns": dict(self.english)}
    if self.columns:
      d["columns"] = dict(self.columns)
    if self.fields:
      d["fields"] = dict(self.fields)
    if self.where:
      d["where"] = {k: list(v) for k, v in self.where.items()}
    return d


def _choose(groups: dict[str, dict[str | None, str]], lang: str, unmarked: str) -> dict[str, str]:
  """plain name -> column of `lang`; an unmarked column stands for the language `unmarked`."""
  out = {}
  for base, variants in groups.items():
    if lang in variants:
      out[base] = variants[lang]
    elif None in variants and unmarked == lang:
      out[base] = variants[None]
  return out


def _telugu_share(row: dict, cols: Iterable[str]) -> float:
  from telugu_jax.data.clean import telugu_ratio

  text = " ".join(v for c in cols if isinstance(v := row.get(c), str))
  ratio, n = telugu_ratio(text)
  return ratio if n else 0.0


def plan_columns(first_row: Any, lang: str = "auto", fields: Mapping[str, str] | None = None,
                 where: Mapping[str, tuple[str, ...]] | None = None, *, path: str = "") -> ColumnPlan:
  """The plan for a file whose first row is `first_row`; see the module docstring."""
  if lang not in LANG_CHOICES:
    raise ValueError(f"--lang-columns {lang!r}: choose one of {LANG_CHOICES}")
  fields, where = dict(fields or {}), dict(where or {})
  row = first_row if isinstance(first_row, dict) else {}
  for flag, cols in (("--where", list(where)), ("--fields", list(fields.values()))):
    if row and (missing := [c for c in cols if c not in row]):
      raise ValueError(f"{path}: {flag} names {missing}, which the file does not have (columns: {list(row)[:20]})")
  groups: dict[str, dict[str | None, str]] = {}
  for k in row:
    base, tag = split_column(k)
    groups.setdefault(base, {})[tag] = k
  groups = {b: v for b, v in groups.items() if set(v) - {None}}  # fields with a language marker somewhere
  langs = {t for v in groups.values() for t in v if t}
  plain = [v[None] for v in groups.values() if None in v]
  # What an unmarked column next to marked ones is: English next to Telugu; otherwise judged by its script.
  unmarked = "en" if "te" in langs else ("te" if plain and _telugu_share(row, plain) > 0.5 else "en")
  if lang in ("auto", "both"):
    chosen = "te" if "te" in langs or (plain and unmarked == "te") else "none"
  else:
    chosen = lang
    if not langs:
      raise ValueError(f"{path}: --lang-columns {lang}, but no column has a language marker "
                       f"(columns: {list(row)[:20]})")
  columns = _choose(groups, chosen, unmarked) if chosen != "none" else {}
  english = _choose(groups, "en", unmarked) if lang == "both" else {}
  if lang == "both" and (chosen != "te" or not english):
    raise ValueError(f"{path}: --lang-columns both needs Telugu and English variants of the same fields "
                     f"(columns: {list(row)[:20]})")
  return ColumnPlan(lang=chosen, columns=columns, fields=fields, where=where, english=english)


TO_TELUGU = "కింది ఆంగ్ల పాఠ్యాన్ని తెలుగులోకి అనువదించండి:\n\n"
TO_ENGLISH = "కింది తెలుగు పాఠ్యాన్ని ఆంగ్లంలోకి అనువదించండి:\n\n"


def translation_tasks(te: Conversation, en: Conversation, where: str) -> tuple[list[Conversation], list[str]]:
  """`--lang-columns both`: from a row's Telugu and English conversations, an en->te task on the answer
  and a te->en task on the question, instructions in Telugu, `meta.task = "translation"`. Returns the
  tasks and, for each one not made, why (same text in both languages, a turn missing)."""
  out, skipped = [], []
  for direction, src, tgt, prompt in (("en-te", en.turns[-1].content, te.turns[-1].content, TO_TELUGU),
                                      ("te-en", te.turns[0].content, en.turns[0].content, TO_ENGLISH)):
    if src.strip() == tgt.strip():
      skipped.append(f"{direction}: same text in both languages")
      continue
    try:
      out.append(make(f"{te.id}/{direction}", te.source, [("user", prompt + src.strip()), ("assistant", tgt.strip())],
                      where, task="translation", direction=direction, pair_of=te.id))
    except RecordError as e:
      skipped.append(f"{direction}: {e.reason}")
  return out, skipped
