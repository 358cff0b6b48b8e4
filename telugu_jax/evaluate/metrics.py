"""Automatic metrics of generated answers: reference metrics, format compliance, language fidelity, repetition.

- chrF++ and BLEU through `sacrebleu` (corpus level). BLEU uses sacrebleu's default `13a` tokenizer, which
  splits on spaces and ASCII punctuation and keeps Telugu letters and vowel signs together; the `spm`/`flores`
  tokenizers would download a model, so they are not used.
- ROUGE-L: F1 of the longest common subsequence over word tokens. The usual ROUGE tokenizers (rouge-score,
  py-rouge) keep only `[a-z0-9]` and score any Telugu pair 0; `words` keeps every letter, combining mark
  (Telugu vowel signs and viramas are marks, not letters: `\\w` alone splits words at them) and digit, plus
  ZWNJ/ZWJ. Written here because it is a dozen lines and the library's tokenizer is the part that is wrong.
- Format compliance, per response: non-empty, ended with `<eos>` within the token budget (the generator's
  `finish_reason == "eos"`), and no invented turn: the raw decoded text (not the text cut at the stop string)
  holds no role marker at the start of a line or after a space.
- Language fidelity: the response is mainly in the script expected (Telugu when asked in Telugu; English for
  a te->en translation), judged by the share of its letters in the Telugu Unicode block.
- Repetition: the share of n-grams (words and punctuation, n=3; or characters, n=10, whichever is larger) of a
  response that repeat an earlier one.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Sequence

import sacrebleu

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate

TELUGU_BLOCK = (0x0C00, 0x0C7F)
JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: inside Telugu words they change the rendering, not the word


# ---- tokenisation --------------------------------------------------------------------------------------

def _word_char(ch: str) -> bool:
  return ch in JOINERS or unicodedata.category(ch)[0] in "LMN"


def _tokens(text: str, *, marks: bool) -> list[str]:
  out, cur = [], []
  for ch in text:
    if _word_char(ch):
      cur.append(ch)
      continue
    if cur:
      out.append("".join(cur))
      cur = []
    if marks and not ch.isspace():
      out.append(ch)
  if cur:
    out.append("".join(cur))
  return [w.casefold() for w in out if w.strip(JOINERS)]


def words(text: str) -> list[str]:
  """Word tokens that keep Telugu: maximal runs of letters, marks, digits and joiners, casefolded."""
  return _tokens(text, marks=False)


# ---- reference metrics ---------------------------------------------------------------------------------

def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common subsequence (dynamic programme, O(len(a) * len(b)) time, O(len(b)) memory)."""
  if not a or not b:
    return 0
  prev = [0] * (len(b) + 1)
  for x in a:
    cur = [0]
    for j, y in enumerate(b):
      cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
    prev = cur
  return prev[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
  """ROUGE-L F1 (beta = 1, as rouge-score reports `fmeasure`) on `words` tokens, in [0, 1]."""
  h, r = words(hypothesis), words(reference)
  lcs = lcs_length(h, r)
  if lcs == 0:
    return 0.0
  p, rec = lcs / len(h), lcs / len(r)
  return 2 * p * rec / (p + rec)


def chrf_pp(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus chrF++ (character 6-grams + word 2-grams, beta 2), 0-100, as sacrebleu computes it."""
  return sacrebleu.CHRF(word_order=2).corpus_score(list(hypotheses), [list(references)]).score


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU with sacrebleu's defaults (13a tokenizer, exponential smoothing), 0-100."""
  return sacrebleu.BLEU().corpus_score(list(hypotheses), [list(references)]).score


# ---- per-response checks --------------------------------------------------------------------------------

def script_share(text: str) -> float | None:
  """Share of letters and marks in `text` that are in the Telugu block; None when there are none."""
  n = te = 0
  for ch in text:
    if unicodedata.category(ch)[0] in "LM":
      n += 1
      te += TELUGU_BLOCK[0] <= ord(ch) <= TELUGU_BLOCK[1]
  return te / n if n else None


def main_script(text: str, threshold: float = 0.5) -> str | None:
  """"te" when at least `threshold` of the letters are Telugu, "other" when fewer, None with no letters."""
  share = script_share(text)
  if share is None:
    return None
  return "te" if share >= threshold else "other"


def invented_turn(raw_text: str, template: ChatTemplate = DEFAULT_TEMPLATE) -> str | None:
  """The role marker the response wrote as if opening a new turn (at the start, after a newline or a space)."""
  for marker in (template.user, template.assistant):
    if re.search(r"(^|\s)" + re.escape(marker), raw_text, flags=re.IGNORECASE):
      return marker
  return None


def _repeated_share(items: Sequence) -> float:
  return 1.0 - len(set(items)) / len(items) if items else 0.0


def repetition_rate(text: str, n: int = 3, chars: int = 10) -> float:
  """How much of the text repeats itself (0: nothing; ~1: a loop): the larger of the share of token n-grams
  that repeat an earlier one (tokens: `words` plus each punctuation mark, so a loop of dots counts) and the
  same share over character `chars`-grams (a loop inside one "word", e.g. one letter written 60 times)."""
  w = _tokens(text, marks=True)
  by_tokens = _repeated_share([tuple(w[i:i + n]) for i in range(len(w) - n + 1)])
  by_chars = _repeated_share([text[i:i + chars] for i in range(len(text) - chars + 1)])
  return max(by_tokens, by_chars)


@dataclasses.dataclass
class ResponseChecks:
  non_empty: bool
  ended_with_eos: bool          # finish_reason == "eos": stopped by itself within max_new_tokens
  invented_turn: str | None     # the marker found in the raw text, or None
  script: str | None            # "te", "other", "digits" (numbers, no letters) or None (neither)
  expected_script: str          # "te" or "other"
  repetition: float

  @property
  def compliant(self) -> bool:
    return self.non_empty and self.ended_with_eos and self.invented_turn is None

  @property
  def faithful(self) -> bool:
    """In the expected script; an answer of numbers without letters is language-neutral; punctuation alone
    or nothing is not faithful."""
    return self.script in (self.expected_script, "digits")

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), "compliant": self.compliant, "faithful": self.faithful}


def check_response(text: str, raw_text: str, finish_reason: str, *, expected_script: str = "te",
                   template: ChatTemplate = DEFAULT_TEMPLATE) -> ResponseChecks:
  """Checks of one response.

  Args:
    text: the answer as shown (the generator's text, cut before a stop string).
    raw_text: every generated token decoded (eos dropped), including a stop string that ended it.
    finish_reason: the generator's "eos", "stop" or "length".
    expected_script: "te" or "other" (e.g. English for a te->en translation).
  """
  if finish_reason not in ("eos", "stop", "length"):
    raise ValueError(f"unknown finish_reason {finish_reason!r}; expected 'eos', 'stop' or 'length'")
  if expected_script not in ("te", "other"):
    raise ValueError(f"expected_script must be 'te' or 'other', got {expected_script!r}")
  script = main_script(text)
  if script is None and any(unicodedata.category(ch) == "Nd" for ch in text):
    script = "digits"  # numbers only (an arithmetic answer): language-neutral
  return ResponseChecks(non_empty=bool(text.strip()), ended_with_eos=finish_reason == "eos",
                        invented_turn=invented_turn(raw_text, template), script=script,
                        expected_script=expected_script, repetition=repetition_rate(text))


# ---- aggregation ---------------------------------------------------------------------------------------

def summarise(rows: Iterable[dict]) -> dict:
  """Metrics over answer rows (`text`, `reference` or None, `checks` a ResponseChecks dict).

  Percentages are 0-100; reference metrics use only rows with a reference (`n_ref` says how many).
  """
  rows = list(rows)
  if not rows:
    return {"n": 0}
  pct = lambda key: 100.0 * sum(bool(r["checks"][key]) for r in rows) / len(rows)
  out = {"n": len(rows), "compliance": pct("compliant"), "non_empty": pct("non_empty"),
         "ended_with_eos": pct("ended_with_eos"),
         "invented_turn": 100.0 * sum(r["checks"]["invented_turn"] is not None for r in rows) / len(rows),
         "fidelity": pct("faithful"),
         "repetition": sum(r["checks"]["repetition"] for r in rows) / len(rows),
         "errors": sum(1 for r in rows if r.get("error"))}
  with_ref = [r for r in rows if r.get("reference")]
  out["n_ref"] = len(with_ref)
  if with_ref:
    hyps, refs = [r["text"] for r in with_ref], [r["reference"] for r in with_ref]
    out["chrf_pp"] = chrf_pp(hyps, refs)
    out["bleu"] = bleu(hyps, refs)
    out["rouge_l"] = 100.0 * sum(rouge_l(h, ref) for h, ref in zip(hyps, refs, strict=True)) / len(with_ref)
  return out


def summarise_by_category(rows: Iterable[dict]) -> dict:
  """{"overall": summarise(all), "by_category": {category: summarise(rows of it)}}."""
  rows = list(rows)
  cats = sorted({r["category"] for r in rows})
  return {"overall": summarise(rows), "by_category": {c: summarise(r for r in rows if r["category"] == c)
                                                      for c in cats}}
