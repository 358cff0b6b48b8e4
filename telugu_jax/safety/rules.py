"""Pattern files -> compiled rules. The lists are data (telugu_jax/assets/safety/*.txt) that users extend.

A directory of lists holds:
  macros.txt        `NAME = REGEX` lines; `{NAME}` in a rule or another macro expands to `(?:REGEX)`.
  <category>.txt    one rule a line: `name [options]: REGEX`. The file's stem is the category
                    (violence.txt -> "violence"); a new file makes a new category.
  identity.txt      rules in the same format for questions about who/what the assistant is (not a block).
  messages.json     the refusal per category, the self-harm message and the identity answer.

Lines with the same macro or rule name (in one file or across directories) are alternatives: the rule
fires if any of them matches, so an extra directory extends a built-in rule by reusing its name. The
options of all its lines apply to the whole rule.
`#` starts a comment line. Options, comma separated inside `[...]`:
  user, assistant   the roles the rule checks (default: both)
  text              match the text view (punctuation and digits kept; see normalise.py) instead of words
  luhn, verhoeff    the digits of the match must pass that checksum (card numbers, Aadhaar numbers)
  off               switch the rule off (e.g. an extra directory turning off a built-in rule)

Rules are Python `re` patterns matched against normalised, lower-case text. In word rules every word is
separated by one space and the text starts and ends with one, so `\\b` is rewritten to "next to a space"
and `\\w` to "not a space": Python's own `\\b`/`\\w` treat Telugu vowel signs as non-word characters and
would cut `చంపు` into `చ`, `ప`. A virama (్) in a word rule is optional, so `రికార్డ్\\w*` also matches
`రికార్డులు` (a loanword's final virama gives way to a vowel sign when it is inflected).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources

from telugu_jax.safety.normalise import pattern_source

# Checked in this order; the first category whose rule fires is the decision's category. Self-harm first,
# so that "how do I kill myself" gets the supportive message; hate before violence ("kill all <group>").
PRIORITY = ("self_harm", "sexual_minors", "hate", "violence", "drugs_weapons", "personal_data")
IDENTITY = "identity"
ROLES = ("user", "assistant")
_OPTIONS = frozenset({"user", "assistant", "text", "luhn", "verhoeff", "off"})
_LINE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\s*(?:\[(?P<opts>[^\]]*)\])?\s*:\s?(?P<rx>.*)$")
_MACRO_LINE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)\s*=\s?(?P<rx>.*)$")
_MACRO_REF = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_UPPER = re.compile(r"(?<![\\?])(?<!\(\?P)[A-Z]")


class RuleError(ValueError):
  """A pattern file that cannot be used; the message names file:line and what to fix."""


def builtin_dir() -> str:
  return str(resources.files("telugu_jax") / "assets" / "safety")


# ---- checksums -----------------------------------------------------------------------------------------
# Written here rather than adding python-stdnum for two ten-line checks; tested on published examples.

def luhn_ok(digits: str) -> bool:
  """Luhn mod-10 check used by payment card numbers."""
  total = 0
  for i, ch in enumerate(reversed(digits)):
    d = int(ch)
    if i % 2 == 1:
      d = d * 2 - 9 if d > 4 else d * 2
    total += d
  return len(digits) > 1 and total % 10 == 0


_VERHOEFF_D = [  # dihedral group D5 multiplication table
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
  [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
  [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
  [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_VERHOEFF_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
for _ in range(7):
  _VERHOEFF_P.append([_VERHOEFF_P[-1][k] for k in (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)])


def verhoeff_ok(digits: str) -> bool:
  """Verhoeff check used by Aadhaar numbers (the last of the 12 digits is the check digit)."""
  c = 0
  for i, ch in enumerate(reversed(digits)):
    c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
  return len(digits) > 1 and c == 0


_CHECKS: dict[str, Callable[[str], bool]] = {"luhn": luhn_ok, "verhoeff": verhoeff_ok}


# ---- rules ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
  category: str
  name: str                  # "violence/kill_howto"
  regex: re.Pattern
  roles: frozenset[str]
  view: str                  # "words" or "text"
  check: str | None          # "luhn" / "verhoeff": the match's digits must pass it
  where: str                 # file:line of its first line

  def search(self, views: Sequence[str]) -> str | None:
    """The first matching span (in a normalised view) or None."""
    for v in views:
      for m in self.regex.finditer(v):
        if self.check is None or _CHECKS[self.check]("".join(c for c in m.group(0) if c.isdigit())):
          return m.group(0).strip()
    return None


def _word_regex(src: str) -> str:
  """Rewrite `\\b` to "next to a space", `\\w`/`\\W` to "(not) a space" and a Telugu virama to an optional
  one, outside character classes. The last lets a loanword stem written with a final virama match its
  inflected forms, where a vowel sign takes the virama's place: `రికార్డ్\\w*` matches `రికార్డులు`."""
  out, i, in_class = [], 0, False
  while i < len(src):
    ch = src[i]
    if ch == "\\" and i + 1 < len(src):
      nxt = src[i + 1]
      if not in_class and nxt == "b":
        out.append("(?:(?<= )|(?= ))")
      elif not in_class and nxt == "w":
        out.append("[^ ]")
      elif not in_class and nxt == "W":
        out.append(" ")
      else:
        out.append(src[i:i + 2])
      i += 2
      continue
    if ch == "\u0c4d" and not in_class:
      out.append("\u0c4d?")
      i += 1
      continue
    if ch == "[" and not in_class:
      in_class = True
    elif ch == "]" and in_class:
      in_class = False
    out.append(ch)
    i += 1
  return "".join(out)


def _lines(path: str) -> Iterable[tuple[int, str]]:
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = pattern_source(line.rstrip("\n\r"))
      if line.strip() and not line.lstrip().startswith("#"):
        yield n, line.strip()


def read_macros(dirs: Sequence[str]) -> dict[str, list[str]]:
  macros: dict[str, list[str]] = {}
  for d in dirs:
    path = os.path.join(d, "macros.txt")
    if not os.path.exists(path):
      continue
    for n, line in _lines(path):
      m = _MACRO_LINE.match(line)
      if not m or not m.group("rx"):
        raise RuleError(f"{path}:{n}: expected `NAME = REGEX` with an upper-case NAME, got {line[:60]!r}")
      macros.setdefault(m.group("name"), []).append(m.group("rx"))
  return macros


def expand(src: str, macros: dict[str, list[str]], where: str, _depth: int = 0) -> str:
  if _depth > 20:
    raise RuleError(f"{where}: macros nest more than 20 deep (a macro that refers to itself?)")

  def sub(m: re.Match) -> str:
    name = m.group(1)
    if name not in macros:
      known = ", ".join(sorted(macros)) or "none"
      raise RuleError(f"{where}: unknown macro {{{name}}}; define it in macros.txt (known: {known})")
    return "(?:" + "|".join(expand(a, macros, where, _depth + 1) for a in macros[name]) + ")"

  return _MACRO_REF.sub(sub, src)


def _parse_category(path: str, category: str, macros: dict, acc: dict) -> None:
  for n, line in _lines(path):
    where = f"{path}:{n}"
    m = _LINE.match(line)
    opts = {o.strip() for o in (m.group("opts") or "").split(",") if o.strip()} if m else set()
    if not m or not (m.group("rx").strip() or "off" in opts):
      raise RuleError(f"{where}: expected `name [options]: REGEX` (name in lower case), got {line[:60]!r}")
    if bad := opts - _OPTIONS:
      raise RuleError(f"{where}: unknown option(s) {sorted(bad)}; allowed: {sorted(_OPTIONS)}")
    entry = acc.setdefault(m.group("name"), {"alts": [], "opts": set(), "where": where, "category": category})
    entry["opts"] |= opts
    if not m.group("rx").strip():
      continue
    rx = expand(m.group("rx").strip(), macros, where)
    if up := _UPPER.search(rx):
      raise RuleError(f"{where}: text is lower-cased before matching, so {up.group(0)!r} can never match; "
                      "write the pattern in lower case")
    entry["alts"].append(rx)


def _compile(name: str, entry: dict) -> Rule:
  opts = entry["opts"]
  view = "text" if "text" in opts else "words"
  checks = opts & set(_CHECKS)
  if len(checks) > 1:
    raise RuleError(f"{entry['where']}: rule {name} asks for more than one checksum {sorted(checks)}")
  roles = frozenset(opts & set(ROLES)) or frozenset(ROLES)
  src = "|".join(f"(?:{a})" for a in entry["alts"])
  if view == "words":
    src = _word_regex(src)
  try:
    regex = re.compile(src)
  except re.error as e:
    raise RuleError(f"{entry['where']}: rule {name} is not a valid regular expression ({e})") from None
  return Rule(entry["category"], f"{entry['category']}/{name}", regex, roles, view,
              next(iter(checks), None), entry["where"])


@functools.lru_cache(maxsize=8)
def load_rules(dirs: tuple[str, ...]) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
  """(blocking rules in PRIORITY order, identity rules) from `dirs` (built-in first, then extras)."""
  for d in dirs:
    if not os.path.isdir(d):
      raise RuleError(f"safety list directory {d} does not exist")
  macros = read_macros(dirs)
  per_cat: dict[str, dict] = {}
  for d in dirs:
    for fname in sorted(os.listdir(d)):
      stem, ext = os.path.splitext(fname)
      if ext != ".txt" or stem == "macros" or stem.startswith("."):
        continue
      if not re.fullmatch(r"[a-z][a-z0-9_]*", stem):
        raise RuleError(f"{os.path.join(d, fname)}: a category file name must be lower_case_with_underscores.txt")
      _parse_category(os.path.join(d, fname), stem, macros, per_cat.setdefault(stem, {}))
  order = [c for c in PRIORITY if c in per_cat] + sorted(c for c in per_cat if c not in PRIORITY)
  rules, identity = [], []
  for cat in order:
    for name, entry in per_cat[cat].items():
      if "off" in entry["opts"]:
        continue
      (identity if cat == IDENTITY else rules).append(_compile(name, entry))
  return tuple(rules), tuple(identity)
