"""Normalised *views* of a text for pattern matching: the text shown to people is never changed.

A rule is matched against every view of a text and fires if it matches any of them. Two kinds:

`text_view` (numbers, e-mail-like strings): punctuation kept.
  1. NFKD, then drop Latin combining marks (U+0300..U+036F and the other combining-diacritic blocks),
     then NFC. Together that is NFKC minus accents: fullwidth `ｋｉｌｌ`, mathematical `𝐤𝐢𝐥𝐥` and
     ligatures become ASCII, `kíll` and Zalgo `k̷i̷l̷l̷` become `kill`. Telugu is safe under NFKC: no
     character of the Telugu block has a compatibility decomposition (tested), so NFKC == NFC there,
     and NFC only composes ె + ౖ into ై, the spelling every pattern uses anyway.
  2. Remove format characters (Unicode category Cf): ZWSP U+200B, ZWNJ U+200C, ZWJ U+200D, word joiner
     U+2060, BOM U+FEFF, soft hyphen, bidi controls. ZWNJ is legitimate inside Telugu words
     (`ఫేస్‌బుక్`), but spellings with and without it must match alike, and patterns are normalised the
     same way. Only the copy used for matching loses it.
  3. Latin look-alikes from Cyrillic and Greek (`kіll` with a Cyrillic і) to Latin; any script's
     decimal digits (Telugu ౧౨౩) to ASCII digits; casefold.
  4. Whitespace runs to one space.

`word_views` (everything else): from the text view,
  5. simple leetspeak undone where a leet character sits between Latin letters (`k1ll`, `b0mb`), one
     leet digit ends or starts a word (`d0`, `0verdose`) or `@`/`$` comes with letters (`h@te`); numbers,
     units and chords (`500`, `14-year-old`, `100mg`, `Dm7`) stay; a second view reads `1`, `|` as `l`;
  6. apostrophes deleted (`i'll` -> `ill`, `someone's` -> `someones`); every other character that is not
     a letter, mark or digit becomes a space; a Telugu vowel sign, virama or anusvara that a space cut
     off its letter is joined back (`చ ం పు` -> `చంపు`);
  7. spacing tricks: a run of >= 3 single Latin letters (`k i l l`, `k.i.l.l`, `k-i-l-l`) or >= 2 single
     Telugu syllables (`చం పు`) is joined. Because `i`/`a` are English words (`how do i k i l l`), a
     second joined view keeps a leading or trailing `i`/`a` apart; the unjoined view is kept too.
  8. padded with one space at each end, so rules can rely on a space at every word edge.

Telugu code points (U+0C00..U+0C7F): independent vowels U+0C05..U+0C14, U+0C60..U+0C61; consonants
U+0C15..U+0C39, U+0C58..U+0C5A; dependent signs (vowel signs, virama, anusvara, visarga, candrabindu,
nukta, length marks) U+0C00..U+0C04, U+0C3C, U+0C3E..U+0C56, U+0C62..U+0C63.
"""

from __future__ import annotations

import re
import unicodedata

# Combining diacritics of Latin/Greek/Cyrillic (never used by Telugu, whose signs live in U+0C00..U+0C7F).
_LATIN_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# Look-alikes seen in evasion attempts; a short hand-made table (Unicode's confusables.txt has ~6,000
# entries, most irrelevant here, and no well-kept small library ships it).
_CONFUSABLES = str.maketrans({
  "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
  "ԁ": "d", "һ": "h", "к": "k", "м": "m", "т": "t", "в": "b", "н": "h", "г": "r", "ӏ": "l",
  "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
  "Х": "x", "І": "i", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ο": "o", "ρ": "p", "τ": "t",
  "υ": "u", "ν": "v", "χ": "x", "Α": "a", "Β": "b", "Ε": "e", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
  "Ο": "o", "Ρ": "p", "Τ": "t", "Χ": "x", "ɡ": "g", "ɑ": "a",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "!": "i", "|": "i"})
_LEET_L = str.maketrans({"1": "l", "|": "l"})
_LEET_RUN = re.compile(r"[a-z0-9@$!|]+")
_LEET_INSIDE = re.compile(r"[a-z][0-9@$!|]+[a-z]|^[a-z]+[01345@$]$|^[013457@$][a-z]{2,}$")
_LATIN = re.compile(r"[a-z]")

TE_SIGN = "\u0c00-\u0c04\u0c3c\u0c3e-\u0c56\u0c62\u0c63"
TE_BASE = "\u0c05-\u0c14\u0c15-\u0c39\u0c58-\u0c5a\u0c60\u0c61"
_SIGN_AFTER_SPACE = re.compile(rf"(?<=[{TE_BASE}{TE_SIGN}]) +(?=[{TE_SIGN}])")
_TE_SYLLABLE = re.compile(rf"(?:[{TE_BASE}]\u0c4d)*[{TE_BASE}][{TE_SIGN}]*")  # one akshara, e.g. స్త్రీ
_APOSTROPHES = re.compile("['’ʼ`´]")
_SPACES = re.compile(r"\s+")


def _keep(ch: str) -> bool:
  return unicodedata.category(ch)[0] in "LMN"


def _digit(ch: str) -> str:
  d = unicodedata.digit(ch, None)
  return str(d) if d is not None and not ch.isascii() else ch


def text_view(text: str) -> str:
  """Steps 1-4: NFKC without accents, no format characters, Latin look-alikes, ASCII digits, casefold."""
  s = unicodedata.normalize("NFKD", text)
  s = _LATIN_MARKS.sub("", s)
  s = unicodedata.normalize("NFC", s)
  s = "".join(_digit(c) for c in s if unicodedata.category(c) != "Cf")
  s = s.translate(_CONFUSABLES).casefold()
  return _SPACES.sub(" ", s).strip()


def _leet_runs(text: str) -> list[re.Match]:
  """Runs of letters/digits/leet symbols that look like leetspeak: a leet character between two Latin
  letters (`k1ll`, `m3th`), one leet digit ending or starting a word (`d0`, `0verdose`), or an `@`/`$`
  with letters (`h@te`, `$ex`). `14-year-old`, `100mg`, `covid19`, `4g` stay as they are; a trailing `!`
  is punctuation (`kill!`)."""
  runs = []
  for m in _LEET_RUN.finditer(text):
    core = m.group(0).rstrip("!|")
    if _LEET_INSIDE.search(core) or (("@" in core or "$" in core) and _LATIN.search(core)):
      runs.append(m)
  return runs


def _unleet(text: str, table: dict) -> str:
  out, last = [], 0
  for m in _leet_runs(text):
    core = m.group(0).rstrip("!|")
    out.append(text[last:m.start()] + core.translate(table).translate(_LEET))
    last = m.start() + len(core)
  return "".join(out) + text[last:]


def _words(text: str) -> str:
  """Step 6: letters, marks and digits only, one space between words."""
  s = _APOSTROPHES.sub("", text)
  s = "".join(c if _keep(c) else " " for c in s)
  s = _SPACES.sub(" ", s).strip()
  return _SIGN_AFTER_SPACE.sub("", s)


def _single(tok: str) -> str | None:
  """'latin' for one Latin letter, 'te' for one Telugu syllable, else None."""
  if len(tok) == 1 and "a" <= tok <= "z":
    return "latin"
  if _TE_SYLLABLE.fullmatch(tok):
    return "te"
  return None


def _despace(words: str, keep_edge_words: bool) -> str:
  """Step 7: join runs of single letters/syllables (>= 3 Latin, >= 2 Telugu) separated by spaces."""
  toks = words.split(" ")
  out: list[str] = []
  i = 0
  while i < len(toks):
    kind = _single(toks[i])
    j = i
    while kind and j + 1 < len(toks) and _single(toks[j + 1]) == kind:
      j += 1
    run = toks[i:j + 1]
    if kind and len(run) >= (3 if kind == "latin" else 2):
      head, tail = [], []
      if keep_edge_words and kind == "latin" and len(run) >= 4:
        if run[0] in ("i", "a"):
          head, run = [run[0]], run[1:]
        if run[-1] in ("i", "a"):
          tail, run = [run[-1]], run[:-1]
      out.extend(head + ["".join(run)] + tail)
    else:
      out.extend(run)
    i = j + 1
  return " ".join(out)


def word_views(text: str) -> list[str]:
  """The distinct word views of `text` (steps 1-8), each padded with one space at both ends."""
  base = text_view(text)
  leets = [_unleet(base, {})]
  if any("1" in m.group(0) or "|" in m.group(0) for m in _leet_runs(base)):
    leets.append(_unleet(base, _LEET_L))
  views: list[str] = []
  for s in leets:
    w = _words(s)
    for v in (w, _despace(w, keep_edge_words=False), _despace(w, keep_edge_words=True)):
      v = f" {v} "
      if v not in views:
        views.append(v)
  return views


def pattern_source(src: str) -> str:
  """What a pattern file's text goes through before compiling: the text view's Unicode steps that
  cannot change regex syntax (NFC, no format characters), so `ఫేస్‌బుక్` in a file matches `ఫేస్బుక్`."""
  s = unicodedata.normalize("NFC", src)
  return "".join(c for c in s if unicodedata.category(c) != "Cf")
