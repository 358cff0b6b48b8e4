"""Which language a Telugu-script text is in: Telugu, Sanskrit, or Hindi/Marathi written in Telugu letters.

The script ratio cannot tell them apart (Sanskrit stanzas in Telugu script are 99% Telugu-block letters), and
word-ending counts need 15+ words to be stable, while a scraped "answer" is often one 8-word stanza. So: a
naive Bayes classifier over character 1-5-grams of the text's Telugu letters, words joined by one space and
the text padded with spaces, so word endings (`ః `, `ు `, `మ్ `) and beginnings are n-grams too. That is the
classic language-ID model (Cavnar & Trenkle; langid.py; fastText's char n-grams) at its smallest: no package
in the registries both ships Sanskrit-in-Telugu-script and is small enough to bundle, and the registry
models (fastText lid.176, GlotLID) are weight downloads.

Training text, all written for the project and read at first use (~0.2 s):
  te  telugu_jax/assets/demo/prose.txt and the demo conversations (modern Telugu, ~120K letters)
      + assets/langid/telugu_verse.txt (a few lines in the old literary register: ఁ, ఱ, -ంబు, -చున్)
      + assets/langid/telugu_modern.txt (everyday Telugu full of English loanwords: -ర్, -ట్, -న్ endings)
  sa  assets/langid/sanskrit.txt (Sanskrit prose and verse composed for the project: narrative, dialogue,
      puranic frame lines, maxims)
  hi  assets/langid/hindi_marathi.txt (Hindi and some Marathi, with and without final viramas)

`identify(text)` gives a `Guess`: the likeliest language and `score`, the log-likelihood ratio of Telugu
against the likeliest other language per letter (> 0: Telugu is likelier). The clean stage rejects a turn
with at least `lang_min_letters` Telugu letters whose score is below `min_telugu_lang_score`
(reason `not_telugu_language`). Measured on real files (scripts/measure_langid.py; numbers in README).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from collections.abc import Iterable

import numpy as np

LANGS = ("te", "sa", "hi")
NAMES = {"te": "Telugu", "sa": "Sanskrit", "hi": "Hindi/Marathi"}
ORDERS = (1, 2, 3, 4, 5)
ALPHA = 0.5                      # add-alpha smoothing per order
MAX_LETTERS = 3000               # a longer text is judged on its first ~3000 letters: enough, and bounded cost
_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
# Telugu-block letters and signs, without the digits (U+0C66-0C6F) and fractions (U+0C78-0C7F).
_WORD = re.compile("[\u0c00-\u0c65\u0c70-\u0c77]+")


@dataclasses.dataclass(frozen=True)
class Guess:
  lang: str          # the likeliest of LANGS
  score: float       # log P(text | te) - max over other languages of log P(text | lang), per letter
  letters: int       # Telugu letters the guess rests on
  other: str         # the likeliest language other than Telugu


def letters(text: str) -> str:
  """The text's Telugu-script words, one space between them, padded with spaces (ZWNJ/ZWJ dropped)."""
  words = _WORD.findall(text.replace("\u200c", "").replace("\u200d", ""))
  return " " + " ".join(words) + " " if words else ""


def ngram_keys(s: str) -> np.ndarray:
  """Every 1-5-gram of `letters()` output as a uint64: 8 bits per character (its offset in the Telugu
  block; 128 for the space) and the order above bit 40, so lookups are one vectorised searchsorted
  instead of a Python loop (the clean stage calls this on every assistant turn). The lone space is left out.
  """
  c = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32).astype(np.int64) - 0x0C00
  c[c < 0] = 128  # the space
  L = len(c)
  if not L:
    return np.zeros(0, np.uint64)
  padded = np.concatenate([c, np.zeros(max(ORDERS), np.int64)])
  five = padded[:L].copy()  # the 5-gram starting at each position, first character lowest
  for j in range(1, max(ORDERS)):
    five |= padded[j:L + j] << (8 * j)
  out = [(five[:L - n + 1] & ((1 << (8 * n)) - 1)) | (n << 40) for n in ORDERS if L >= n]
  out[0] = out[0][c != 128]  # the lone space
  return np.concatenate(out).astype(np.uint64)


@dataclasses.dataclass(frozen=True)
class Model:
  keys: np.ndarray        # [n-grams] uint64, sorted (see ngram_keys)
  logp: np.ndarray        # [n-grams, len(LANGS)] float32: log P(gram | lang), add-alpha smoothed per order

  @classmethod
  def train(cls, texts: dict[str, Iterable[str]]) -> Model:
    per_lang = {}
    for lang in LANGS:
      ks = [ngram_keys(s) for t in texts[lang] if (s := letters(t))]
      per_lang[lang] = np.unique(np.concatenate(ks), return_counts=True)
    keys = np.unique(np.concatenate([k for k, _ in per_lang.values()]))
    order = (keys >> np.uint64(40)).astype(np.int64)
    logp = np.zeros((len(keys), len(LANGS)), np.float32)
    for j, lang in enumerate(LANGS):
      k, n = per_lang[lang]
      c = np.zeros(len(keys), np.float64)
      c[np.searchsorted(keys, k)] = n
      for o in ORDERS:
        m = order == o
        logp[m, j] = np.log((c[m] + ALPHA) / (c[m].sum() + ALPHA * m.sum()))
    return cls(keys, logp)

  def identify(self, text: str) -> Guess:
    s = letters(text)
    if len(s) > MAX_LETTERS:
      s = s[:s.rfind(" ", 0, MAX_LETTERS) + 1] or s[:MAX_LETTERS]
    n_letters = len(s) - s.count(" ")
    k = np.sort(ngram_keys(s))  # sorted needles: searchsorted is ~1.5x faster
    pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
    rows = pos[self.keys[pos] == k]  # n-grams no language was trained on carry no evidence
    if not len(rows) or not n_letters:
      return Guess("te", math.inf, 0, "sa")
    ll = self.logp[rows].sum(0, dtype=np.float64)
    other = 1 + int(np.argmax(ll[1:]))
    return Guess(LANGS[int(np.argmax(ll))], float(ll[0] - ll[other]) / n_letters, n_letters, LANGS[other])


def _read(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [ln for ln in f.read().splitlines() if ln.strip()]


def _demo_turns() -> list[str]:
  out = []
  for name in ("conversations_a.jsonl", "conversations_b.jsonl"):
    for line in _read(os.path.join(_ASSETS, "demo", name)):
      out += [t["content"] for t in json.loads(line)["turns"]]
  return out


@functools.cache
def default_model() -> Model:
  """The model trained on the bundled text (see the module docstring); built once per process."""
  te = _read(os.path.join(_ASSETS, "demo", "prose.txt")) + _demo_turns()
  te += _read(os.path.join(_ASSETS, "langid", "telugu_verse.txt")) + _read(os.path.join(_ASSETS, "langid",
                                                                                        "telugu_modern.txt"))
  return Model.train({"te": te, "sa": _read(os.path.join(_ASSETS, "langid", "sanskrit.txt")),
                      "hi": _read(os.path.join(_ASSETS, "langid", "hindi_marathi.txt"))})


def identify(text: str) -> Guess:
  return default_model().identify(text)
