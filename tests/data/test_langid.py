"""Language ID inside the Telugu script, on sentences written for these tests (not in the training text)."""

import json

from telugu_jax.data import langid
from telugu_jax.data.clean import CleanConfig, check, run_clean
from telugu_jax.data.records import Conversation, write_jsonl

SANSKRIT = [  # composed for the tests, in Telugu script
    "వనే వసన్తి మునయః శాన్తచిత్తాః సదా ధ్యానపరాయణాః| తేషాం ఆశ్రమే మృగాః అపి నిర్భయాః విచరన్తి||",
    "యః పరేషాం దుఃఖం దృష్ట్వా స్వయం దుఃఖీ భవతి స ఏవ సజ్జనః ఇతి కథ్యతే|",
    "తతః రాజా సభాం ప్రవిశ్య మన్త్రిభిః సహ రాజ్యస్య హితం విచారయామాస|",
]
HINDI = ["హమారే స్కూల్ మేం కల సాంస్కృతిక కార్యక్రమ్ హోగా, సభీ బచ్చే నాటక్ మేం భాగ్ లేంగే|",
         "ముఝే సుబహ జల్దీ ఉఠనా పసంద్ హై క్యోంకి తబ్ హవా ఠండీ హోతీ హై|"]
TELUGU = [
    "నిన్న సాయంత్రం మా తాతగారు పాత రోజుల కథలు చెప్పారు. అప్పట్లో ఊరికి బస్సు కూడా వచ్చేది కాదట.",
    "కంప్యూటర్ నేర్చుకోవాలంటే ముందుగా టైపింగ్ అలవాటు చేసుకోవడం మంచిది.",
    "ఈ సంవత్సరం వానలు సమయానికి పడటంతో రైతులు ఆనందంగా ఉన్నారు.",
    "చిన్ననాటి స్నేహితులు ఎప్పటికీ గుర్తుంటారు.",
]


def test_identify():
  for text in SANSKRIT:
    g = langid.identify(text)
    assert g.lang == "sa" and g.score < -1.0, (text, g)
  for text in HINDI:
    g = langid.identify(text)
    assert g.lang == "hi" and g.score < -1.0, (text, g)
  for text in TELUGU:
    g = langid.identify(text)
    assert g.lang == "te" and g.score > 0, (text, g)
  assert langid.identify("Hello world 123").letters == 0  # nothing to judge
  assert langid.letters("రాముడు\u200cతో  వచ్చాడు!") == " రాముడుతో వచ్చాడు "


def test_clean_rejects_with_score(tmp_path):
  cfg = CleanConfig()
  rows = [Conversation.single("sa", "ఈ శ్లోకం చెప్పండి.", SANSKRIT[0]),
          Conversation.single("hi", "ఏదైనా చెప్పండి.", HINDI[0]),
          Conversation.single("te", "మీ తాతగారి గురించి చెప్పండి.", TELUGU[0]),
          # a Sanskrit question with a Telugu explanation is Telugu data: only answers are judged
          Conversation.single("q", SANSKRIT[1] + " దీని అర్థం ఏమిటి?", "ఇతరుల బాధను చూసి తానూ బాధపడేవాడే మంచివాడు అని దీని అర్థం."),
          Conversation.single("short", "ఇది ఏమిటి?", "నమః")]  # too few letters to judge
  assert [check(c, cfg)[0] if check(c, cfg) else None for c in rows] == [
      "not_telugu_language", "not_telugu_language", None, None, None]
  write_jsonl(tmp_path / "in.jsonl", rows)
  s = run_clean([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), cfg, progress=False)
  assert s["rejected"] == {"not_telugu_language": 2}
  rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
  assert [(r["id"], r["lang"]) for r in rejected] == [("sa", "sa"), ("hi", "hi")]
  assert all(r["score"] < cfg.min_telugu_lang_score for r in rejected) and "Sanskrit" in rejected[0]["detail"]
