"""Telugu datasets in the layouts they are published in, on files written for these tests: bilingual CSV/TSV
columns (Telugu-LLM-Labs), multilingual sets with a language column (Aya dataset / collection), IndicAlign
pair lists, stringified messages, bilingual preference pairs. Every run: in = consumed + rejected + filtered."""

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telugu_jax.data.__main__ import main as data_main
from telugu_jax.data.mix import data_card
from telugu_jax.data.readers import run_read
from telugu_jax.data.readers.columns import parse_fields, parse_where, plan_columns, split_column
from telugu_jax.data.records import read_jsonl
from telugu_jax.data.settings import PrepareSettings
from telugu_jax.dpo.records import run_read as dpo_read

from .conftest import write_jsonl

# Telugu-LLM-Labs layout: English columns, then Telugu, then transliterated Telugu.
BILINGUAL_HEADER = ["instruction", "input", "output", "telugu_instruction", "telugu_input", "telugu_output",
                    "telugu_transliterated_instruction", "telugu_transliterated_input",
                    "telugu_transliterated_output"]
BILINGUAL = [
    ["Name the capital of Telangana.", "", "Hyderabad is the capital of Telangana.",
     "తెలంగాణ రాజధాని పేరు చెప్పండి.", "", "తెలంగాణ రాజధాని హైదరాబాదు.",
     "telangana rajadhani peru cheppandi.", "", "telangana rajadhani hyderabadu."],
    ["Summarise the passage.", "The Krishna river rises in Maharashtra, flows through Karnataka, Telangana and "
     "Andhra Pradesh, and meets the Bay of Bengal.", "The Krishna flows from Maharashtra to the Bay of Bengal.",
     "కింది పేరాను సంక్షిప్తంగా చెప్పండి.", "కృష్ణా నది మహారాష్ట్రలో పుట్టి, కర్ణాటక, తెలంగాణ, ఆంధ్రప్రదేశ్ గుండా "
     "ప్రవహించి బంగాళాఖాతంలో కలుస్తుంది.", "కృష్ణా నది మహారాష్ట్ర నుండి బంగాళాఖాతం వరకు ప్రవహిస్తుంది.",
     "kinda peranu sankshiptanga cheppandi.", "krishna nadi ...", "krishna nadi maharashtra nundi ..."],
    ["Give two tips for good sleep.", "", "1. Go to bed at the same time every day.\n2. Keep the phone away.",
     "మంచి నిద్రకు రెండు సూచనలు ఇవ్వండి.", "", "1. రోజూ ఒకే సమయానికి పడుకోండి.\n2. పడుకునే ముందు ఫోన్‌ను దూరంగా పెట్టండి.",
     "manchi nidraku rendu suchanalu ivvandi.", "", "1. roju oke samayaniki padukondi.\n2. phone ni duranga pettandi."],
    ["What is 7 times 8?", "", "56", "7 ని 8 తో గుణిస్తే ఎంత?", "", "56", "7 ni 8 to gunisthe entha?", "", "56"],
    ["Say hello.", "", "Hello!", "నమస్కారం చెప్పండి.", "", "", "namaskaram cheppandi.", "", ""],  # no Telugu answer
]


def _write_csv(path, header, rows, delimiter=","):
  with open(path, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, delimiter=delimiter)
    w.writerow(header)
    w.writerows(rows)
  return path


def _read(tmp_path, path, name=None, **kw):
  out = tmp_path / (name or ("out_" + path.name.replace(".", "_")))
  s = run_read([str(path)], str(out), progress=False, **kw)
  return read_jsonl(out / "records.jsonl"), _books(out), s


def _books(out):
  """in == consumed + rejected + filtered, and the files agree with summary.json; the rejected rows."""
  s = json.loads((out / "summary.json").read_text())
  rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
  assert s["in"] == s["consumed"] + sum(s["rejected"].values()) + sum(s.get("filtered", {}).values())
  assert len(rejected) == sum(s["rejected"].values())
  assert len((out / "records.jsonl").read_text().splitlines()) == s["out"]
  return rejected


def test_bilingual_csv_auto_takes_telugu(tmp_path):
  path = _write_csv(tmp_path / "te_alpaca.csv", BILINGUAL_HEADER, BILINGUAL)
  with open(path, "a", encoding="utf-8") as f:
    f.write("only,three,cells\n")
  recs, rejected, s = _read(tmp_path, path)
  assert s["formats"][str(path)] == "alpaca"
  assert s["columns"][str(path)] == {"lang": "te", "columns": {
      "instruction": "telugu_instruction", "input": "telugu_input", "output": "telugu_output"}}
  assert s["in"] == 6 and s["out"] == 4 and s["out"] + len(rejected) == s["in"]
  assert recs[0].turns[1].content == "తెలంగాణ రాజధాని హైదరాబాదు."
  assert recs[1].turns[0].content == BILINGUAL[1][3] + "\n\n" + BILINGUAL[1][4]
  assert recs[2].turns[1].content == BILINGUAL[2][5]  # a quoted field across lines
  assert recs[0].id == "te_alpaca/0"
  by_where = {r["where"]: r["reason"] for r in rejected}
  assert by_where == {f"{path}:row 5": "empty_turn", f"{path}:row 6": "malformed"}
  assert "3 cells" in next(r["detail"] for r in rejected if r["reason"] == "malformed")


def test_bilingual_csv_en_translit_fields_and_tsv(tmp_path):
  path = _write_csv(tmp_path / "bi.csv", BILINGUAL_HEADER, BILINGUAL)
  recs, _, s = _read(tmp_path, path, "en", lang_columns="en")
  assert s["columns"][str(path)]["lang"] == "en"
  assert [r.turns[1].content for r in recs] == [row[2] for row in BILINGUAL]
  recs, _, _ = _read(tmp_path, path, "tr", lang_columns="translit")
  assert recs[0].turns[1].content == "telangana rajadhani hyderabadu."
  # --fields wins over the language choice: any column onto any schema field
  recs, _, s = _read(tmp_path, path, "f", lang_columns="en",
                     fields="instruction=telugu_instruction,input=telugu_input,output=telugu_output")
  assert recs[0].turns[0].content == "తెలంగాణ రాజధాని పేరు చెప్పండి."
  assert s["columns"][str(path)]["fields"]["output"] == "telugu_output"
  # a layout no reader knows, mapped by --fields; TSV as well as CSV
  tsv = _write_csv(tmp_path / "qa.tsv", ["prashna", "javabu", "moolam"],
                   [["ఒక వారంలో ఎన్ని రోజులు?", "ఒక వారంలో ఏడు రోజులు ఉంటాయి.", "పాఠ్యపుస్తకం"]], delimiter="\t")
  with pytest.raises(ValueError, match="cannot tell the schema"):
    _read(tmp_path, tsv, "nofields")
  recs, _, s = _read(tmp_path, tsv, "qa", fields={"instruction": "prashna", "output": "javabu"})
  assert s["formats"][str(tsv)] == "alpaca" and recs[0].turns[1].content == "ఒక వారంలో ఏడు రోజులు ఉంటాయి."
  with pytest.raises(ValueError, match="does not have"):
    _read(tmp_path, tsv, "typo", fields={"instruction": "prasna", "output": "javabu"})
  # gzip of CSV, like any other input
  gz = tmp_path / "bi.csv.gz"
  gz.write_bytes(gzip.compress(path.read_bytes()))
  recs, _, s = _read(tmp_path, gz, "gz")
  assert s["formats"][str(gz)] == "alpaca" and recs[2].turns[1].content == BILINGUAL[2][5]


def test_lang_columns_both_makes_translation_tasks(tmp_path):
  path = _write_csv(tmp_path / "bi.csv", BILINGUAL_HEADER, BILINGUAL)
  recs, rejected, s = _read(tmp_path, path, lang_columns="both")
  assert s["in"] == 5 and s["consumed"] == 4 and len(rejected) == 1
  tasks = [r for r in recs if r.meta.get("task") == "translation"]
  plain = [r for r in recs if "task" not in r.meta]
  assert len(plain) == 4
  en_te = next(r for r in tasks if r.id == "bi/0/en-te")
  assert en_te.turns[0].content.startswith("కింది ఆంగ్ల పాఠ్యాన్ని తెలుగులోకి అనువదించండి:")
  assert en_te.turns[0].content.endswith("Hyderabad is the capital of Telangana.")
  assert en_te.turns[1].content == "తెలంగాణ రాజధాని హైదరాబాదు." and en_te.meta["direction"] == "en-te"
  te_en = next(r for r in tasks if r.id == "bi/0/te-en")
  assert te_en.turns[1].content == "Name the capital of Telangana." and te_en.meta["pair_of"] == "bi/0"
  # "56" is the same in both languages: no task, and the summary says so
  assert not any(r.id == "bi/3/en-te" for r in tasks)
  assert s["translation_tasks_not_made"] == {"en-te: same text in both languages": 1}
  with pytest.raises(ValueError, match="needs Telugu and English"):
    _read(tmp_path, write_jsonl(tmp_path / "mono.jsonl", [{"instruction": "ప్రశ్న", "output": "జవాబు"}]), "m",
          lang_columns="both")


AYA = [  # the Aya dataset's columns
    {"inputs": "తెలుగు భాషలో ఎన్ని అచ్చులు ఉన్నాయి?", "targets": "తెలుగు వర్ణమాలలో పదహారు అచ్చులు ఉన్నాయి.",
     "language": "Telugu", "language_code": "tel", "annotation_type": "original-annotations", "user_id": "u1"},
    {"inputs": "भारत की राजधानी क्या है?", "targets": "भारत की राजधानी नई दिल्ली है।", "language": "Hindi",
     "language_code": "hin", "annotation_type": "original-annotations", "user_id": "u2"},
    {"inputs": "What is the largest ocean?", "targets": "The Pacific Ocean.", "language": "English",
     "language_code": "eng", "annotation_type": "re-annotations", "user_id": "u3"},
    {"inputs": "ఉగాది పచ్చడిలో ఏ రుచులు ఉంటాయి?", "targets": "ఉగాది పచ్చడిలో తీపి, పులుపు, చేదు, వగరు, ఉప్పు, కారం "
     "అనే ఆరు రుచులు ఉంటాయి.", "language": "Telugu", "language_code": "tel", "annotation_type": "original-annotations",
     "user_id": "u4"},
    {"inputs": "ఖాళీ జవాబు", "targets": "", "language": "Telugu", "language_code": "tel",
     "annotation_type": "original-annotations", "user_id": "u5"},
]


def test_aya_jsonl_and_parquet_with_where(tmp_path):
  path = write_jsonl(tmp_path / "aya.jsonl", AYA)
  recs, rejected, s = _read(tmp_path, path, where=["language_code=tel"])
  assert s["formats"][str(path)] == "flan" and s["filtered"] == {"language_code=tel": 2}
  assert s["in"] == 5 and s["out"] == 2 and [r["reason"] for r in rejected] == ["empty_turn"]
  assert s["in"] == s["out"] + len(rejected) + sum(s["filtered"].values())
  assert recs[1].turns[1].content == AYA[3]["targets"] and recs[1].id == "aya/3"  # ids keep the row's position
  # without --where every language is read: nothing filtered, no `filtered` key
  recs, _, s = _read(tmp_path, path, "all")
  assert s["out"] == 4 and "filtered" not in s
  # the Aya collection, as Parquet, two conditions; a column the file lacks is an error, not 0 rows
  coll = [dict(id=str(i), inputs=r["inputs"], targets=r["targets"], dataset_name="Aya-Dataset", sub_dataset_name="-",
               task_type="generation", template_id=0, language=r["language"].lower(),
               script="Telu" if r["language_code"] == "tel" else ("Deva" if r["language_code"] == "hin" else "Latn"),
               split="train") for i, r in enumerate(AYA)]
  pq.write_table(pa.Table.from_pylist(coll), tmp_path / "coll.parquet")
  recs, rejected, s = _read(tmp_path, tmp_path / "coll.parquet", where=["script=Telu", "language=telugu"])
  assert s["out"] == 2 and s["filtered"] == {"script=Telu": 2} and recs[0].id == "coll/0"
  assert rejected[0]["where"] == f"{tmp_path / 'coll.parquet'}:row 4"
  recs, _, s = _read(tmp_path, tmp_path / "coll.parquet", "either", where=["language=telugu", "language=hindi"])
  assert s["out"] == 3 and s["filtered"] == {"language=telugu|hindi": 1}
  with pytest.raises(ValueError, match="language_cod"):
    _read(tmp_path, path, "typo", where=["language_cod=tel"])


def test_indicalign_interactions_parquet(tmp_path):
  rows = [
      {"id": "ia-1", "num_turns": 1, "interactions": [["వేసవిలో ఏ పండ్లు దొరుకుతాయి?",
                                                      "వేసవిలో మామిడి, పుచ్చకాయ, తాటి ముంజలు ఎక్కువగా దొరుకుతాయి."]]},
      {"id": "ia-2", "num_turns": 2, "interactions": [
          ["నాకు ఒక పుస్తకం సూచించండి.", "బాలల కోసం చందమామ కథలు చదవండి."],
          ["అవి ఏ భాషలో ఉంటాయి?", "చందమామ కథలు తెలుగుతో పాటు చాలా భాషలలో వచ్చాయి."]]},
      {"id": "ia-3", "num_turns": 1, "interactions": [["ఒకే మాట"]]},
      {"id": "ia-4", "num_turns": 1, "interactions": [["ప్రశ్న ఉంది", ""]]},
  ]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "indicalign.parquet")
  recs, rejected, s = _read(tmp_path, tmp_path / "indicalign.parquet")
  assert s["formats"][str(tmp_path / "indicalign.parquet")] == "interactions"
  assert [r.id for r in recs] == ["indicalign/ia-1", "indicalign/ia-2"]
  assert [t.role for t in recs[1].turns] == ["user", "assistant"] * 2
  assert recs[1].turns[3].content == rows[1]["interactions"][1][1]
  assert {r["where"].rsplit(":", 1)[1]: r["reason"] for r in rejected} == {"row 2": "malformed", "row 3": "empty_turn"}
  assert s["in"] == s["out"] + len(rejected)


def test_stringified_messages_and_conversations(tmp_path):
  msgs = [{"role": "user", "content": "దీపావళి ఎందుకు జరుపుకుంటారు?"},
          {"role": "assistant", "content": "చీకటిపై వెలుగు గెలిచినందుకు గుర్తుగా దీపావళి జరుపుకుంటారు."}]
  rows = [{"id": "m1", "messages": json.dumps(msgs, ensure_ascii=False)},
          {"id": "m2", "messages": str(msgs)},                       # pandas writes Python literals
          {"id": "m3", "messages": '[{"role": "user", "content": "సగం'}]  # cut off
  path = write_jsonl(tmp_path / "chat.jsonl", rows)
  recs, rejected, s = _read(tmp_path, path)
  assert s["formats"][str(path)] == "chat" and [r.id for r in recs] == ["chat/m1", "chat/m2"]
  assert recs[0].turns[1].content == msgs[1]["content"] and recs[0].turns == recs[1].turns
  assert rejected[0]["reason"] == "malformed" and rejected[0]["where"] == f"{path}:3"
  assert "neither JSON nor a Python literal" in rejected[0]["detail"]
  sg = [{"id": "s1", "conversations": json.dumps([{"from": "human", "value": "నమస్తే!"},
                                                  {"from": "gpt", "value": "నమస్తే! ఏం కావాలి?"}], ensure_ascii=False)}]
  pq.write_table(pa.Table.from_pylist(sg), tmp_path / "sg.parquet")
  recs, _, s = _read(tmp_path, tmp_path / "sg.parquet")
  assert s["formats"][str(tmp_path / "sg.parquet")] == "sharegpt" and recs[0].turns[1].content == "నమస్తే! ఏం కావాలి?"


PREF_HEADER = ["id", "en_question", "en_chosen", "en_rejected", "te_question", "te_chosen", "te_rejected"]
PREFS = [
    ["p1", "How can I save water at home?", "Fix leaking taps and reuse rinse water for plants.", "Water is wet.",
     "ఇంట్లో నీటిని ఎలా ఆదా చేయాలి?", "కారుతున్న కుళాయిలను బాగు చేయించండి, బియ్యం కడిగిన నీటిని మొక్కలకు పోయండి.",
     "నీళ్ళు తడిగా ఉంటాయి."],
    ["p2", "Is the moon a star?", "No, the moon is a satellite of the Earth.", "Yes.",
     "చంద్రుడు నక్షత్రమా?", "కాదు, చంద్రుడు భూమికి ఉపగ్రహం.", "కాదు, చంద్రుడు భూమికి ఉపగ్రహం."],  # same answers in Telugu
]


def test_bilingual_preference_pairs(tmp_path):
  path = _write_csv(tmp_path / "prefs.csv", PREF_HEADER, PREFS)
  s = dpo_read([str(path)], str(tmp_path / "te"), progress=False)
  rejected = _books(tmp_path / "te")
  assert s["formats"][str(path)] == "ultrafeedback" and s["columns"][str(path)]["lang"] == "te"
  pairs = [json.loads(x) for x in (tmp_path / "te" / "records.jsonl").read_text().splitlines()]
  assert pairs[0]["prompt"] == [{"role": "user", "content": PREFS[0][4]}] and pairs[0]["chosen"] == PREFS[0][5]
  assert pairs[0]["id"] == "prefs/p1" and [r["reason"] for r in rejected] == ["identical_responses"]
  s = dpo_read([str(path)], str(tmp_path / "en"), progress=False, lang_columns="en")
  _books(tmp_path / "en")
  pairs = [json.loads(x) for x in (tmp_path / "en" / "records.jsonl").read_text().splitlines()]
  assert s["out"] == 2 and pairs[1]["rejected"] == "Yes."
  s = dpo_read([str(path)], str(tmp_path / "w"), progress=False, where=["id=p1"])
  assert s["out"] == 1 and s["filtered"] == {"id=p1": 1}
  _books(tmp_path / "w")


def test_column_helpers():
  assert split_column("telugu_transliterated_output") == ("output", "translit")
  assert split_column("te_question") == ("question", "te") and split_column("question_en") == ("question", "en")
  assert split_column("user_id") == ("user_id", None) and split_column("language_code") == ("language_code", None)
  assert parse_fields("instruction=a, output=b") == {"instruction": "a", "output": "b"}
  assert parse_where(["a=1", "b=2", "a=3"]) == {"a": ("1", "3"), "b": ("2",)}
  with pytest.raises(ValueError, match="FIELD=COLUMN"):
    parse_fields("instruction")
  # an unmarked column next to only an English one is Telugu when its text is
  plan = plan_columns({"question": "చంద్రుడు నక్షత్రమా?", "en_question": "Is the moon a star?", "answer": "కాదు"})
  assert plan.lang == "te" and plan.columns == {"question": "question"}
  assert plan_columns({"question": "q", "answer": "a"}).lang == "none"


def test_cli_and_data_card(tmp_path):
  path = write_jsonl(tmp_path / "aya.jsonl", AYA)
  s = data_main(["read", "--in", str(path), "--out", str(tmp_path / "r"), "--where", "language_code=tel",
                 "--quiet"])
  assert s["filtered"] == {"language_code=tel": 2} and s["out"] == 2
  csv_path = _write_csv(tmp_path / "bi.csv", BILINGUAL_HEADER, BILINGUAL)
  s2 = data_main(["read", "--in", str(csv_path), "--out", str(tmp_path / "b"), "--lang-columns", "en", "--quiet"])
  assert s2["columns"][str(csv_path)]["lang"] == "en"
  card = data_card(read_jsonl(tmp_path / "r" / "records.jsonl"), [s, s2])
  assert "## Sources read" in card
  assert "| r | aya.jsonl (flan) | as named | language_code=tel | 5 | 2 | 2 | 1 |" in card
  assert "| b | bi.csv (alpaca) | en: instruction, input, output | — | 5 | 5 | — | 0 |" in card


def test_prepare_with_published_layouts(tmp_path):
  import os

  import ml_collections

  from telugu_jax.data.__main__ import load_config
  from telugu_jax.data.pipeline import prepare

  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  csv_path = _write_csv(tmp_path / "bi.csv", BILINGUAL_HEADER, BILINGUAL)
  aya = write_jsonl(tmp_path / "aya.jsonl", AYA)
  cfg = load_config(os.path.join(repo, "configs", "data.py"), [f"--config.workdir={tmp_path / 'work'}"])

  def source(name, paths, **options):
    return ml_collections.ConfigDict({"name": name, "paths": paths, "format": "auto", "translate": False,
                                      "options": options})

  cfg.sources = [source("bi", [str(csv_path)], lang_columns="both"),
                 source("aya", [str(aya)], where=["language_code=tel"]),
                 source("mapped", [str(csv_path)], fields={"instruction": "telugu_instruction",
                                                           "output": "telugu_output"}, lang_columns="en")]
  cfg.dedupe.prefer_sources = ["bi", "aya", "mapped"]
  s = prepare(PrepareSettings.from_config(cfg), progress=False, log=lambda _: None)
  assert s["read/aya"]["filtered"] == {"language_code=tel": 2}
  assert s["read/mapped"]["columns"][str(csv_path)]["fields"] == {"instruction": "telugu_instruction",
                                                                   "output": "telugu_output"}
  card = (tmp_path / "work" / "mix" / "data_card.md").read_text(encoding="utf-8")
  assert "| aya | aya.jsonl (flan) | as named | language_code=tel | 5 | 2 | 2 | 1 |" in card
  assert "te + en→te/te→en tasks: instruction←telugu_instruction, input←telugu_input, output←telugu_output" in card
  assert "en: instruction←telugu_instruction" in card  # --fields over the English choice
