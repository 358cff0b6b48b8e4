"""Measure the clean stage's language check on real files, by hand (not a test: the files are not ours).

    python scripts/measure_langid.py --real /work/shared/data/real [--threshold 0.0]

Each unit (a Sanskrit stanza, a Wikipedia paragraph, a UD sentence, a verse) is given as the answer to a short
Telugu question and run through `clean.check`; prints, per file, n, rejected as not_telugu_language, the rate,
and the other reasons. Nothing from the files is written anywhere.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from collections import Counter

from telugu_jax.data.clean import CleanConfig, check, normalise
from telugu_jax.data.records import Conversation


def _lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def sanskrit_stanzas(path: str) -> list[str]:
  text = "\n".join(ln for ln in _lines(path) if not ln.startswith("###"))
  return [s.strip() for s in re.split(r"\|\|[\d\-\s]*\|\|", text) if s.strip()]


def paragraphs(path: str) -> list[str]:
  return [ln.strip() for ln in _lines(path) if ln.strip() and not set(ln.strip()) <= {"="}]


def conllu_sentences(paths: list[str]) -> list[str]:
  return [ln[len("# text = "):] for p in paths for ln in _lines(p) if ln.startswith("# text = ")]


def blank_separated(path: str) -> list[str]:
  text = "\n".join(ln for ln in _lines(path) if not ln.startswith("###"))
  return [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]


def four_lines(path: str) -> list[str]:
  lines = [ln for ln in _lines(path) if ln.strip() and not ln.startswith("###")]
  return ["\n".join(lines[i:i + 4]) for i in range(0, len(lines), 4)]


def tsv_column(path: str, col: int, header: bool) -> list[str]:
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return [r[col] for r in rows[1 if header else 0:] if len(r) > col and r[col].strip()]


def units(real: str) -> dict[str, list[str]]:
  te = os.path.join(real, "te")
  ud = [os.path.join(te, f"ud_te_mtg-ud-{s}.conllu") for s in ("train", "dev", "test")]
  return {
      "brahma_puranam (Sanskrit, stanzas)": sanskrit_stanzas(
          os.path.join(te, "wikisource_brahma_puranam_SANSKRIT_in_telugu_script_sample.txt")),
      "tewiki_300_articles (paragraphs)": paragraphs(os.path.join(te, "tewiki_300_articles.txt")),
      "ud_te_mtg train+dev+test (sentences)": conllu_sentences(ud),
      "sib200_tel_Telu train (FLORES sentences)": tsv_column(os.path.join(te, "sib200_tel_Telu_train.tsv"), 2, True),
      "mgsm_te (questions)": tsv_column(os.path.join(te, "mgsm_te.tsv"), 0, False),
      "vemana_satakam (verses)": blank_separated(os.path.join(te, "wikisource_vemana_satakam.txt")),
      "sumathi_satakam (verses)": blank_separated(os.path.join(te, "wikisource_sumathi_satakam.txt")),
      "molla_ramayanam (4-line groups)": four_lines(os.path.join(te, "wikisource_molla_ramayanam.txt")),
      "pothana_bhagavatham 1 (4-line groups)": four_lines(
          os.path.join(te, "wikisource_pothana_bhagavatham_skandham1.txt")),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--real", default="/work/shared/data/real")
  p.add_argument("--threshold", type=float, default=CleanConfig.min_telugu_lang_score)
  p.add_argument("--min-letters", type=int, default=CleanConfig.lang_min_letters)
  p.add_argument("--show", type=int, default=0, help="print this many rejected/kept examples' scores per file")
  args = p.parse_args()
  cfg = CleanConfig(min_telugu_lang_score=args.threshold, lang_min_letters=args.min_letters)
  print(f"threshold {cfg.min_telugu_lang_score}, min letters {cfg.lang_min_letters}")
  print(f"{'file':<42} {'n':>6} {'not_te':>7} {'%':>6}   other reasons")
  for name, texts in units(args.real).items():
    reasons = Counter()
    for i, t in enumerate(texts):
      got = check(normalise(Conversation.single(f"u{i}", "దీని గురించి చెప్పండి.", t)), cfg)
      reasons[got[0] if got else "kept"] += 1
    n, bad = len(texts), reasons.pop("not_telugu_language", 0)
    reasons.pop("kept", None)
    print(f"{name:<42} {n:>6} {bad:>7} {100 * bad / max(n, 1):>5.1f}%   {dict(reasons)}")


if __name__ == "__main__":
  main()
