"""The `clean` stage: Unicode NFC, then filters with thresholds from config, each its own reason.

    python -m telugu_jax.data clean --in runs/data/read/records.jsonl --out runs/data/clean

Checks, in this order (the first that fails names the reason):
  empty_turn          a turn with no text
  forged_role_marker  a line inside a turn starts with a role marker (it would forge a turn)
  broken_script       U+FFFD, control or private-use characters, mojibake (UTF-8 read as Latin-1:
                      "à°"), a Telugu vowel sign / virama with no letter before it, two vowel signs
                      in a row, or a virama followed by a vowel sign
  too_short/too_long  characters per user/assistant turn and per record
  untranslated        a turn whose letters are almost all non-Telugu (an English turn left as it was)
  half_translated     a run of `max_latin_run` Latin words in a row (a sentence left in English)
  english_leakage     too many Latin words in the assistant's Telugu (words the user wrote are allowed)
  low_telugu_ratio    Telugu letters (U+0C00-U+0C7F) among all letters of the record below the minimum
  not_telugu_language an assistant turn in Telugu script but not in Telugu: Sanskrit (most scraped "Telugu"
                      verse), Hindi or Marathi in Telugu letters. A character n-gram model (data/langid.py)
                      scores Telugu against the likeliest other language per letter; a turn of at least
                      `lang_min_letters` Telugu letters scoring below `min_telugu_lang_score` is rejected,
                      with the score and the language in the rejection. Measured on real files
                      (scripts/measure_langid.py): 99.8% of Sanskrit stanzas rejected, 0.6% of Telugu
                      Wikipedia paragraphs (lists of Sanskrit-derived names), 0% of UD, FLORES and MGSM
                      sentences, 0-2.2% of classical Telugu verse.
  repetition          repeated lines, repeated word 3-grams, or a character/short string repeated on
Translation tasks (the instruction asks to translate) skip the language checks: their English is the
point. Code, URLs, e-mail addresses, numbers and placeholders never count as English.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
from telugu_jax.data import langid
from telugu_jax.data.records import Conversation, Turn
from telugu_jax.data.stage import Stage, cached, hash_files
from telugu_jax.data.translate.protect import strip_protected


@dataclasses.dataclass(frozen=True)
class CleanConfig:
  min_telugu_ratio: float = 0.75       # record: Telugu letters / all letters
  untranslated_ratio: float = 0.1      # a turn with a Telugu ratio below this is untranslated
  untranslated_min_letters: int = 12   # ... when it has at least this many letters ("OK" is not a turn left in English)
  max_latin_run: int = 6               # this many Latin words in a row: half_translated
  max_latin_word_frac: float = 0.2     # Latin words / words in the assistant turns ...
  leakage_min_words: int = 8           # ... with at least this many words ("252 metres" is an answer, not leakage)
  min_translation_ratio: float = 0.5   # a translation task needs one turn at least this Telugu
  min_user_chars: int = 2
  min_assistant_chars: int = 1         # "7" answers a sum
  max_turn_chars: int = 6000
  max_record_chars: int = 12000
  max_dup_line_frac: float = 0.3       # duplicate lines / lines (at least 4 lines)
  max_dup_ngram_frac: float = 0.35     # duplicate word 3-grams / 3-grams (at least 20 words)
  max_char_repeat: int = 10            # one character or a short string repeated this many times in a row
  min_telugu_lang_score: float = -1.0  # langid: log P(Telugu) - log P(best other language) per letter, at least
  lang_min_letters: int = 15           # ... judged on assistant turns with at least this many Telugu letters
  allow_translation_tasks: bool = True

  @classmethod
  def from_dict(cls, d: Any) -> CleanConfig:
    d = dict(d.items()) if hasattr(d, "items") else dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown clean settings {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}")
    return cls(**d)


TE = "\u0c00-\u0c7f"
OTHER_LETTER = re.compile(rf"[^\W\d_{TE}]")                   # letters of any other script
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
TE_MARK = "\u0c00-\u0c04\u0c3c\u0c3e-\u0c4d\u0c55\u0c56\u0c62\u0c63"
BROKEN = re.compile(
    "\ufffd|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\uf8ff]"   # replacement, control, private use
    "|à[°±]|[ÂÃ][\u0080-\u00bf]"                             # UTF-8 read as Latin-1 (Telugu is E0 B0/B1 ..)
    rf"|(?:^|(?<=[^{TE}\u200c\u200d]))[{TE_MARK}]"           # a vowel sign/virama with no letter before it
    r"|[\u0c3e-\u0c4c\u0c55\u0c56\u0c62\u0c63]{2}|\u0c4d[\u0c3e-\u0c4c]",  # two vowel signs; virama + vowel sign
    re.M)
TRANSLATION_TASK = re.compile(  # "translate", "say/write in Telugu/English", "into Telugu"
    r"అనువ(?:దించ|ాదం|ాదించ)|తర్జుమా|translat|(?:తెలుగు|ఆంగ్లం|ఇంగ్లీషు|ఇంగ్లీష్‌)లో(?:కి)?[^\n:]{0,12}?"
    r"(?:చెప్ప|రాయ|మార్చ|అనువ)|తెలుగులోకి|ఆంగ్లంలోకి|ఇంగ్లీష్‌?లోకి|in(?:to)? (?:telugu|english)", re.I)


@functools.cache
def _latin_run(n: int) -> re.Pattern:
  return re.compile(r"(?:[A-Za-z][A-Za-z'’-]*[\s,;:()\"]+){" + str(n - 1) + "}[A-Za-z]")


@functools.cache
def _char_repeat(n: int) -> re.Pattern:
  # one character (not rules like ---- or ....) repeated n times in a row
  return re.compile(r"([^\s\-=_.*#|~])\1{" + str(n - 1) + ",}")


@functools.cache
def _string_repeat(n: int) -> re.Pattern:
  # a 2-8 character string repeated n times in a row; only run on long tokens, it is slow
  return re.compile(r"(\S{2,8}?)\1{" + str(n - 1) + ",}")


def telugu_ratio(text: str) -> tuple[float, int]:
  """(Telugu-block characters / letters, number of letters); (1.0, 0) for text without letters.
  Letters: the Telugu block (its letters, vowel signs and rare digits) plus letters of other scripts."""
  # Every U+0C00-U+0C7F character is E0 B0 xx or E0 B1 xx in UTF-8: counting bytes is ~10x faster than a regex.
  b = text.encode()
  te = b.count(b"\xe0\xb0") + b.count(b"\xe0\xb1")
  n = te + len(OTHER_LETTER.findall(text))
  return (te / n if n else 1.0), n


def _repetition(text: str, cfg: CleanConfig) -> str | None:
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if len(lines) >= 4 and 1 - len(set(lines)) / len(lines) > cfg.max_dup_line_frac:
    return f"{len(lines) - len(set(lines))} of {len(lines)} lines repeat"
  words = text.split()
  if len(words) >= 20:
    grams = list(zip(words, words[1:], words[2:], strict=False))
    frac = 1 - len(set(grams)) / len(grams)
    if frac > cfg.max_dup_ngram_frac:
      return f"{frac:.0%} of word 3-grams repeat"
  if m := _char_repeat(cfg.max_char_repeat).search(text):
    return f"{m.group()[:20]!r}... repeats"
  for w in words:
    if len(w) >= 2 * cfg.max_char_repeat and (m := _string_repeat(cfg.max_char_repeat).search(w)):
      return f"{m.group()[:20]!r}... repeats"
  return None


_SEP = "\n|\n"  # joins turns so one regex pass covers a record; "|" stops a Latin-word run at a turn's end


def _turn_at(turns, pos: int) -> tuple[int, int]:
  """(turn index, offset in it) of a position in _SEP.join(contents)."""
  for i, t in enumerate(turns):
    if pos <= len(t.content):
      return i, pos
    pos -= len(t.content) + len(_SEP)
  return len(turns) - 1, pos


def check(conv: Conversation, cfg: CleanConfig = CleanConfig(),
          template: ChatTemplate = DEFAULT_TEMPLATE) -> tuple | None:
  """(reason, detail) for the first failed check, or None; `conv` should already be NFC. A language
  rejection carries a third element, {"lang", "score"}, which the stage writes into the rejected row."""
  turns = conv.turns
  for i, t in enumerate(turns):
    if not t.content.strip():
      return "empty_turn", f"turn {i} ({t.role}) is empty"
  for i, t in enumerate(turns):
    if m := template.forged_marker(t.content):
      return "forged_role_marker", f"turn {i} ({t.role}) has a line starting with {m!r}"
  joined = _SEP.join(t.content for t in turns)
  if m := BROKEN.search(joined):
    i, at = _turn_at(turns, m.start())
    return "broken_script", f"turn {i} ({turns[i].role}) has {m.group()!r} at {at}"
  total = 0
  for i, t in enumerate(turns):
    n = len(t.content)
    total += n
    least = cfg.min_user_chars if t.role == "user" else cfg.min_assistant_chars
    if n < least:
      return "too_short", f"turn {i} ({t.role}) has {n} characters (< {least})"
    if n > cfg.max_turn_chars:
      return "too_long", f"turn {i} ({t.role}) has {n} characters (> {cfg.max_turn_chars})"
  if total > cfg.max_record_chars:
    return "too_long", f"{total} characters (> {cfg.max_record_chars})"

  user_text = "\n".join(t.content for t in turns if t.role == "user")
  translation = cfg.allow_translation_tasks and bool(TRANSLATION_TASK.search(user_text))
  prose = [strip_protected(t.content) for t in turns]
  ratios = [telugu_ratio(p) for p in prose]
  latin = [LATIN_WORD.findall(p) for p in prose]
  allowed = {w.casefold() for t, ws in zip(turns, latin, strict=True) if t.role == "user" for w in ws}
  if not translation:
    for i, (ratio, n) in enumerate(ratios):
      if n >= cfg.untranslated_min_letters and ratio < cfg.untranslated_ratio:
        return "untranslated", f"turn {i} ({turns[i].role}) is {1 - ratio:.0%} non-Telugu letters"
    if any(latin) and (m := _latin_run(cfg.max_latin_run).search(_SEP.join(prose))):
      i = next(k for k, p in enumerate(prose) if m.group().split("\n|\n")[0] in p)
      return "half_translated", f"turn {i} ({turns[i].role}) has English words in a row: {m.group()[:60]!r}"
    words = sum(len(p.split()) for t, p in zip(turns, prose, strict=True) if t.role == "assistant")
    foreign = sum(w.casefold() not in allowed for t, ws in zip(turns, latin, strict=True) if t.role == "assistant"
                  for w in ws)
    if words >= cfg.leakage_min_words and foreign / words > cfg.max_latin_word_frac:
      return "english_leakage", f"{foreign} of {words} assistant words are Latin-script and not in the instruction"
  if translation:
    best = max(r if n else 0.0 for r, n in ratios)
    if best < cfg.min_translation_ratio:
      return "low_telugu_ratio", f"translation task with no Telugu turn (best turn ratio {best:.2f})"
  else:
    # Latin words the instruction itself uses (names, technical terms) may appear anywhere without counting
    # against the record; other scripts and other Latin words do.
    te = sum(r * n for r, n in ratios)
    n = sum(n for _, n in ratios) - sum(len(w) - w.count("'") - w.count("’") - w.count("-")
                                         for ws in latin for w in ws if w.casefold() in allowed)
    if n > 0 and te / n < cfg.min_telugu_ratio:
      return "low_telugu_ratio", f"Telugu letters are {te / n:.2f} of letters (< {cfg.min_telugu_ratio})"
  if not translation:
    for i, t in enumerate(turns):
      if t.role == "assistant" and (g := langid.identify(t.content)).letters >= cfg.lang_min_letters \
          and g.score < cfg.min_telugu_lang_score:
        return "not_telugu_language", (f"turn {i} ({t.role}) reads as {langid.NAMES[g.other]}: Telugu score "
                                       f"{g.score:.2f} per letter (< {cfg.min_telugu_lang_score}) over {g.letters} "
                                       "letters"), {"lang": g.other, "score": round(g.score, 3)}
  for i, t in enumerate(turns):
    if why := _repetition(t.content, cfg):
      return "repetition", f"turn {i} ({t.role}): {why}"
  return None


def normalise(conv: Conversation) -> Conversation:
  """NFC and stripped turns (Telugu has composed and decomposed spellings of e.g. ై)."""
  turns = tuple(Turn(t.role, unicodedata.normalize("NFC", t.content).strip()) for t in conv.turns)
  return dataclasses.replace(conv, turns=turns) if turns != conv.turns else conv


def clean_into(stage: Stage, paths: Sequence[str], cfg: CleanConfig = CleanConfig()) -> None:
  for conv in stage.read(paths):
    if stage.done(conv.id):
      continue
    stage.count_in()
    conv = normalise(conv)
    if problem := check(conv, cfg):
      stage.reject(problem[0], record=conv, detail=problem[1], extra=problem[2] if len(problem) > 2 else None)
    else:
      stage.keep(conv)


def run_clean(paths: Sequence[str], out_dir: str, cfg: CleanConfig = CleanConfig(), *, resume: bool = True,
              progress: bool = True, force: bool = False) -> dict:
  ihash = hash_files(paths, {"stage": "clean", **dataclasses.asdict(cfg)})
  if not force and (done := cached(out_dir, ihash)):
    return done
  with Stage("clean", out_dir, input_hash=ihash, resume=resume, progress=progress, inputs=paths) as stage:
    clean_into(stage, paths, cfg)
  return stage.final
