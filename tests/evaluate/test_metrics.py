"""Metrics against independent computations: chrF++ and BLEU written out here from their definitions (and
sacrebleu's own sentence scores), ROUGE-L from a hand-worked LCS, detectors on crafted outputs."""

import math
from collections import Counter

import pytest
import sacrebleu

from telugu_jax.evaluate import metrics as M

HYP = "మా ఊరిలో ఒక పెద్ద చెరువు ఉంది"
REF = "మా ఊరిలో పెద్ద మామిడి తోట ఒక చెరువు ఉన్నాయి"


def _ngrams(seq, n):
  return Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))


def _chrf_pp_by_definition(hyp: str, ref: str, beta: float = 2.0) -> float:
  """chrF++ (Popović 2017): character 1..6-grams without spaces and word 1..2-grams; precision and recall
  averaged over the orders both sides have, then F-beta. (No punctuation in the test pair, so sacrebleu's
  splitting of word-final punctuation does not apply.)"""
  orders = [(list(hyp.replace(" ", "")), list(ref.replace(" ", "")), n) for n in range(1, 7)]
  orders += [(hyp.split(), ref.split(), n) for n in (1, 2)]
  precs, recs = [], []
  for h, r, n in orders:
    hg, rg = _ngrams(h, n), _ngrams(r, n)
    if sum(hg.values()) and sum(rg.values()):
      match = sum((hg & rg).values())
      precs.append(match / sum(hg.values()))
      recs.append(match / sum(rg.values()))
  p, r = sum(precs) / len(precs), sum(recs) / len(recs)
  return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)


def test_chrf_pp_matches_definition_and_sacrebleu():
  expected = _chrf_pp_by_definition(HYP, REF)
  assert M.chrf_pp([HYP], [REF]) == pytest.approx(expected, abs=1e-9)
  assert M.chrf_pp([HYP], [REF]) == pytest.approx(sacrebleu.sentence_chrf(HYP, [REF], word_order=2).score)
  assert 20 < expected < 90  # Telugu characters are counted, not dropped


def test_bleu_matches_hand_computation():
  hyp = "నేను ప్రతిరోజూ ఉదయం ఆరు గంటలకు నిద్ర లేస్తాను"
  ref = "నేను ప్రతిరోజూ ఉదయం ఆరు గంటలకే నిద్ర లేస్తాను"
  # 7 words each, one differs (గంటలకు/గంటలకే): matches 6/7, 4/6 bigrams, 2/5 trigrams... written out:
  h, r = hyp.split(), ref.split()
  p = [sum((_ngrams(h, n) & _ngrams(r, n)).values()) / (len(h) - n + 1) for n in range(1, 5)]
  assert p == pytest.approx([6 / 7, 4 / 6, 2 / 5, 1 / 4])
  expected = 100 * math.exp(sum(math.log(x) for x in p) / 4)  # equal lengths: brevity penalty 1
  assert M.bleu([hyp], [ref]) == pytest.approx(expected, abs=1e-9)


def test_words_keep_telugu_marks_and_joiners():
  assert M.words("కంప్యూటర్‌లో పని, Hello!") == ["కంప్యూటర్\u200cలో", "పని", "hello"]
  # the plain regex word class splits Telugu words at vowel signs and viramas: why `words` exists
  import re
  assert re.findall(r"\w+", "కంప్యూటర్") != ["కంప్యూటర్"]


def test_rouge_l_worked_example():
  # HYP: మా ఊరిలో ఒక పెద్ద చెరువు ఉంది (6 words); REF: 8 words.
  # LCS = 4 (మా ఊరిలో ఒక చెరువు, or మా ఊరిలో పెద్ద చెరువు): P = 4/6, R = 4/8, F1 = 2PR/(P+R) = 4/7.
  assert M.lcs_length(HYP.split(), REF.split()) == 4
  assert M.rouge_l(HYP, REF) == pytest.approx(4 / 7)
  assert M.rouge_l(REF, REF) == 1.0
  assert M.rouge_l("", REF) == 0.0
  assert M.rouge_l("abc", REF) == 0.0


def test_compliance_detectors_on_crafted_outputs():
  ok = "నమస్కారం! మీకు ఎలా సహాయం చేయగలను?"
  clean = M.check_response(ok, ok, "eos")
  assert clean.compliant and clean.faithful and clean.invented_turn is None
  assert not M.check_response("", "", "eos").compliant                       # empty
  assert not M.check_response("   ", "   ", "eos").non_empty
  cut = M.check_response(ok, ok, "length")                                    # ran out of budget
  assert not cut.compliant and not cut.ended_with_eos
  forged = M.check_response("జవాబు ఇదే.", "జవాబు ఇదే.\nuser: ఇంకో ప్రశ్న", "stop")  # invented next turn
  assert forged.invented_turn == "user:" and not forged.compliant
  assert M.check_response("సరే. User: ఏమిటి?", "సరే. User: ఏమిటి?", "eos").invented_turn == "user:"
  assert M.check_response("assistant: సరే", "assistant: సరే", "eos").invented_turn == "assistant:"
  assert M.invented_turn("superuser: అనే పదం") is None
  with pytest.raises(ValueError, match="finish_reason"):
    M.check_response(ok, ok, "done")


def test_language_fidelity():
  assert M.check_response("Delhi is the capital.", "Delhi is the capital.", "eos").faithful is False
  assert M.check_response("Delhi is the capital.", "Delhi is the capital.", "eos", expected_script="other").faithful
  assert M.main_script("హైదరాబాదు is big") == "te"            # 8 Telugu letters+marks vs 5 Latin
  assert M.main_script("Hyderabad హై") == "other"
  assert M.main_script("123 !!") is None
  assert M.script_share("తెలుగు") == 1.0


def test_repetition_rate():
  # 8 words, 6 trigrams, 2 distinct ((ఒక రోజు ఒక), (రోజు ఒక రోజు)): 1 - 2/6; by characters: 31 characters
  # with a period of 8 ("ఒక రోజు "), 22 10-grams, 8 distinct: 1 - 8/22, smaller
  assert M.repetition_rate("ఒక రోజు ఒక రోజు ఒక రోజు ఒక రోజు") == pytest.approx(2 / 3)
  assert M.repetition_rate(HYP) == 0.0
  assert M.repetition_rate("ఒకటి రెండు") == 0.0
  # a loop of dots (what an undertrained model writes): 6 tokens, 4 trigrams, 1 distinct -> 3/4
  assert M.repetition_rate(".\n.\n.\n.\n.\n.") == pytest.approx(3 / 4)
  assert M.repetition_rate("సరే, సరే.") == 0.0   # 4 tokens (సరే , సరే .), 2 distinct trigrams
  # one letter 60 times is one "word": the character 10-grams catch it (51 of them, 1 distinct)
  assert M.repetition_rate("ఈ" * 60) == pytest.approx(1 - 1 / 51)


def test_summarise_by_category():
  def row(cat, text, ref, reason="eos"):
    return {"category": cat, "text": text, "reference": ref,
            "checks": M.check_response(text, text, reason).to_dict()}

  rows = [row("factual", HYP, REF), row("factual", REF, REF), row("creative", "", None, "length")]
  s = M.summarise_by_category(rows)
  assert s["overall"]["n"] == 3 and s["overall"]["n_ref"] == 2
  assert s["overall"]["compliance"] == pytest.approx(200 / 3)
  assert s["by_category"]["factual"]["rouge_l"] == pytest.approx(100 * (4 / 7 + 1) / 2)
  assert s["by_category"]["factual"]["chrf_pp"] == pytest.approx(M.chrf_pp([HYP, REF], [REF, REF]))
  assert "chrf_pp" not in s["by_category"]["creative"] and s["by_category"]["creative"]["fidelity"] == 0


def test_fidelity_of_letterless_answers():
  assert M.check_response("3, 12, 29", "3, 12, 29", "eos").faithful      # numbers only: language-neutral
  assert not M.check_response("", "", "eos").faithful                     # nothing: not faithful
  assert not M.check_response(".\n.\n.", ".\n.\n.", "eos").faithful      # punctuation only: not faithful
