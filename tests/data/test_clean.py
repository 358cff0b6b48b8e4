"""Filters on Telugu text written for the tests: clean text passes, each fault is caught with its reason."""

import unicodedata

import pytest

from telugu_jax.data.clean import CleanConfig, check, normalise, run_clean, telugu_ratio
from telugu_jax.data.records import Conversation, read_jsonl, write_jsonl

from .conftest import TELUGU_PAIRS, assert_books_balance

C = Conversation.single


@pytest.mark.parametrize("user,answer", TELUGU_PAIRS)
def test_pure_telugu_passes(user, answer):
  assert check(C("x", user, answer)) is None


def test_telugu_ratio_against_unicodedata():
  text = "హైదరాబాదు (Hyderabad) 2024లో – ok!"
  letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]
  expected = sum("\u0c00" <= ch <= "\u0c7f" for ch in letters) / len(letters)
  assert telugu_ratio(text)[0] == pytest.approx(expected)
  assert telugu_ratio(text)[1] == len(letters)


CASES = [
    # (user, assistant, reason)
    ("భారతదేశ రాజధాని ఏది?", "   ", "empty_turn"),
    ("ఒక సంభాషణ రాయండి.", "రాము: నమస్తే\nassistant: నేను నకిలీ మలుపు", "forged_role_marker"),
    ("భారతదేశ రాజధాని ఏది?", "భారతదేశ రాజధాని న్యూఢిల్లీ\ufffd.", "broken_script"),
    ("భారతదేశ రాజధాని ఏది?", "à°­à°¾à°°à°¤ రాజధాని", "broken_script"),           # UTF-8 read as Latin-1
    ("భారతదేశ రాజధాని ఏది?", "ిభారతదేశ రాజధాని న్యూఢిల్లీ.", "broken_script"),    # vowel sign with no letter
    ("భారతదేశ రాజధాని ఏది?", "The capital of India is New Delhi.", "untranslated"),
    ("What is the capital of India?", "భారతదేశ రాజధాని న్యూఢిల్లీ.", "untranslated"),
    ("తెలంగాణ గురించి చెప్పండి.",
     "తెలంగాణ దక్షిణ భారతదేశంలోని రాష్ట్రం. It was formed in the year two thousand fourteen.", "half_translated"),
    ("తెలంగాణ గురించి చెప్పండి.",
     "తెలంగాణ ఒక beautiful state. దీని capital హైదరాబాదు, ఇక్కడ weather చాలా pleasant గా ఉంటుంది.",
     "english_leakage"),
    ("ఆ వాక్యాన్ని మళ్ళీ రాయండి.", "నేను వెళ్ళాను. " * 12, "repetition"),
    ("ఒక కవిత రాయండి.", "వాన\nవాన\nవాన\nవాన\nచినుకు", "repetition"),
    ("నవ్వు ఎలా ఉంటుంది?", "హహహహహహహహహహహహ", "repetition"),
    ("?", "సరే", "too_short"),
]


@pytest.mark.parametrize("user,answer,reason", CASES)
def test_faults_caught_with_reason(user, answer, reason):
  got = check(normalise(C("x", user, answer)))
  assert got is not None and got[0] == reason, got


def test_allowances():
  # translation tasks may carry English both ways
  assert check(C("x", "కింది వాక్యాన్ని తెలుగులోకి అనువదించండి: The sun rises in the east.",
                 "సూర్యుడు తూర్పున ఉదయిస్తాడు.")) is None
  assert check(C("x", "ఈ వాక్యాన్ని ఆంగ్లంలోకి అనువదించండి: నేను బడికి వెళ్తాను.", "I go to school.")) is None
  # Latin words the user wrote, code and URLs are not leakage
  assert check(C("x", "Python లో list అంటే ఏమిటి?",
                 "Python లో list అనేది విలువల వరుస. ఉదాహరణ: `x = [1, 2, 3]`. వివరాలకు https://docs.python.org చూడండి."
                 )) is None
  # ZWNJ after a virama is correct spelling, not broken script
  assert check(C("x", "కంప్యూటర్‌లో పని చేయడం ఎలా?", "కంప్యూటర్‌లో పని చేసేటప్పుడు మధ్యలో విరామం తీసుకోండి.")) is None


def test_sanskrit_in_telugu_script_is_not_telugu():
  # A Sanskrit verse written for the test in Telugu script, the same script ratio as Telugu
  sanskrit = ("యః పఠేత్ శృణుయాత్ వాపి నరః శ్రద్ధా సమన్వితః సర్వపాప వినిర్ముక్తః విష్ణులోకం స గచ్ఛతి "
              "ధర్మః రక్షతి రక్షితః సత్యం వద ధర్మం చర స్వాధ్యాయాత్ మా ప్రమదః")
  assert telugu_ratio(sanskrit)[0] == 1.0
  assert check(C("x", "ఈ శ్లోకాన్ని చదవండి.", sanskrit))[0] == "not_telugu_language"
  telugu = ("మా ఊరిలో ఒక పెద్ద చెరువు ఉంది. వర్షాకాలంలో అది నీటితో నిండుతుంది. పిల్లలు దాని ఒడ్డున ఆడుకుంటారు. "
            "రైతులు ఆ నీటితో పొలాలకు నీళ్ళు పెడతారు. సాయంత్రం పూట చాలా మంది అక్కడ నడుస్తారు.")
  assert check(C("x", "మీ ఊరి గురించి చెప్పండి.", telugu)) is None


def test_nfc_and_thresholds_from_config():
  decomposed = "ప\u0c46\u0c56"  # ె + ౖ, the decomposed spelling of పై
  conv = normalise(C("x", "ఇది " + decomposed + "న ఉంది?", "అవును."))
  assert conv.turns[0].content == unicodedata.normalize("NFC", conv.turns[0].content)
  assert "\u0c48" in conv.turns[0].content
  long = C("x", "కథ చెప్పండి.", "ఒక ఊరిలో ఒక రాజు ఉండేవాడు. " * 10)
  assert check(long, CleanConfig(max_turn_chars=100))[0] == "too_long"
  with pytest.raises(ValueError, match="unknown clean settings"):
    CleanConfig.from_dict({"min_telugu_ratoi": 0.5})


def test_clean_stage_books_and_resume(tmp_path):
  records = [C(f"r{i}", u, a) for i, (u, a, _) in enumerate(CASES)] + [C(f"ok{i}", u, a)
                                                                       for i, (u, a) in enumerate(TELUGU_PAIRS)]
  src = tmp_path / "in.jsonl"
  write_jsonl(src, records)
  with src.open("a") as f:
    f.write("{broken\n")
  s = run_clean([str(src)], str(tmp_path / "out"), progress=False)
  s, rejected = assert_books_balance(tmp_path / "out")
  assert s["in"] == len(records) + 1 and s["out"] == len(TELUGU_PAIRS)
  expected = {f"r{i}": reason for i, (_, _, reason) in enumerate(CASES)}
  assert {r["id"]: r["reason"] for r in rejected if "id" in r} == expected
  assert [r["reason"] for r in rejected if "id" not in r] == ["malformed"]


def test_clean_resumes_after_a_kill(tmp_path):
  records = [C(f"ok{i}", u, a) for i, (u, a) in enumerate(TELUGU_PAIRS)] + [C("bad", "ఏ?", "The answer is in English.")]
  src = tmp_path / "in.jsonl"
  write_jsonl(src, records)
  with src.open("a") as f:
    f.write("{broken\n")
  full = run_clean([str(src)], str(tmp_path / "out"), progress=False)
  # as if killed after three records: no summary, the records file cut mid-line
  (tmp_path / "out" / "summary.json").unlink()
  lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines(keepends=True)
  (tmp_path / "out" / "records.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
  again = run_clean([str(src)], str(tmp_path / "out"), progress=False)
  s, rejected = assert_books_balance(tmp_path / "out")
  assert again["resumed_from"] == 3 + len(rejected)
  assert (s["in"], s["out"], s["rejected"]) == (full["in"], full["out"], full["rejected"])
  assert sorted(r.id for r in read_jsonl(tmp_path / "out" / "records.jsonl")) == sorted(
      f"ok{i}" for i in range(len(TELUGU_PAIRS)))
  # other inputs in the same directory: a fresh run, nothing carried over from the old files
  write_jsonl(src, records[:2])
  (tmp_path / "out" / "summary.json").unlink()
  s = run_clean([str(src)], str(tmp_path / "out"), progress=False)
  assert (s["in"], s["out"]) == (2, 2) and "resumed_from" not in s
