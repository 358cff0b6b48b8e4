"""Spans a translator must not touch: code, URLs, e-mail addresses, numbers and placeholders.

Fenced code blocks split a text into pieces (`split_code`): code passes through verbatim, only the prose
between is translated. Inline spans are swapped for numbered tokens before translation (`mask`) and
put back after (`unmask`); a token the translator lost or duplicated is an error, so a mangled
translation is rejected rather than silently missing a URL. The token looks like `⟦3⟧` for chat
models (told to keep it) and `<ID3>` for IndicTrans2, whose toolkit uses that form.
"""

from __future__ import annotations

import re

FENCED = re.compile(r"```.*?(?:```|\Z)", re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]]")
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PLACEHOLDER = re.compile(r"\{\{[^{}\n]*\}\}|\{[A-Za-z_][\w.]*\}|%\([A-Za-z_]\w*\)[sdif]|%[sdif]"
                         r"|\$\{?[A-Z_][A-Z0-9_]*\}?|</?[A-Za-z][\w-]*(?:\s[^<>\n]*)?/?>")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,:/]\d+)*%?(?![\w])")
# Order matters: a URL may contain digits and an @, a placeholder may contain dots.
PATTERNS = (("code", INLINE_CODE), ("url", URL), ("email", EMAIL), ("placeholder", PLACEHOLDER), ("number", NUMBER))
PROTECTED = re.compile("|".join(f"(?:{p.pattern})" for _, p in PATTERNS) + r"|```.*?(?:```|\Z)", re.S)

STYLES = {"llm": ("⟦{}⟧", re.compile(r"⟦(\d+)⟧")), "indictrans": ("<ID{}>", re.compile(r"<ID(\d+)>"))}


class PlaceholderError(ValueError):
  """The translation lost, invented or duplicated a protected-span token."""

  reason = "placeholder_lost"


def split_code(text: str) -> list[tuple[bool, str]]:
  """[(is_code, piece)]: fenced code blocks verbatim, prose between them to translate."""
  out, pos = [], 0
  for m in FENCED.finditer(text):
    if m.start() > pos:
      out.append((False, text[pos:m.start()]))
    out.append((True, m.group()))
    pos = m.end()
  if pos < len(text):
    out.append((False, text[pos:]))
  return out


def mask(text: str, style: str = "llm", kinds: tuple[str, ...] = ("code", "url", "email", "placeholder", "number"),
         ) -> tuple[str, list[str]]:
  """Replace protected spans by numbered tokens; returns (masked text, originals by number)."""
  fmt, _ = STYLES[style]
  pattern = re.compile("|".join(f"(?:{p.pattern})" for k, p in PATTERNS if k in kinds))
  originals: list[str] = []

  def sub(m: re.Match) -> str:
    originals.append(m.group())
    return fmt.format(len(originals) - 1)

  return pattern.sub(sub, text), originals


def unmask(text: str, originals: list[str], style: str = "llm") -> str:
  """Put the protected spans back; every token must appear exactly once."""
  if not originals:
    return text
  _, token = STYLES[style]
  found = [int(m.group(1)) for m in token.finditer(text)]
  if sorted(found) != list(range(len(originals))):
    raise PlaceholderError(f"expected tokens 0..{len(originals) - 1} once each, found {sorted(found)}")
  return token.sub(lambda m: originals[int(m.group(1))], text)


_MAYBE = re.compile(r"[\d@{%<`$]|www\.")  # every protected span contains one of these


def strip_protected(text: str) -> str:
  """The text without code, URLs, e-mails, placeholders and numbers (for script and leakage checks)."""
  return PROTECTED.sub(" ", text) if _MAYBE.search(text) else text
