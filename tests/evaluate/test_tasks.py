"""The benchmark tasks on small fixtures written here in each upstream shape (never the real files).

Metrics are checked against values worked out by hand on 3-5 items (generation replaced by fixed answers,
so the numbers are known), bits per byte against numpy on the model's own logits (one pass, and windowed),
and the likelihood classifier against numpy scores of every label.
"""

import json
import math

import jax
import numpy as np
import pytest
import sacrebleu

from telugu_jax.chat_format import ChatFormat
from telugu_jax.data.records import Turn
from telugu_jax.evaluate import tasks
from telugu_jax.evaluate.tasks import bpb, common, mgsm, sib200, translation, tydiqa
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.io import LoadedModel
from telugu_jax.model.llama import Llama

# Written for these tests: short Telugu documents, aligned English-Telugu sentences, questions and problems.
DOCS = ["తెలుగు భాష చాలా మధురమైన భాష.\nమా ఊరిలో ఒక పెద్ద చెరువు ఉంది.",
        "హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని.",
        "సూర్యుడు తూర్పున ఉదయిస్తాడు, పడమర అస్తమిస్తాడు. చెట్లు మనకు నీడను, పండ్లను ఇస్తాయి. "
        "రేపు మా బడిలో ఆటల పోటీలు జరుగుతాయి."]
PAIRS = [("7", "sports", "The children play cricket.", "పిల్లలు క్రికెట్ ఆడతారు."),
         ("12", "health", "Drink water every day.", "రోజూ నీళ్ళు తాగండి."),
         ("30", "travel", "We went to Tirupati.", "మేము తిరుపతి వెళ్ళాము."),
         ("41", "geography", "The river joins the sea.", "నది సముద్రంలో కలుస్తుంది.")]


def _tsv(path, rows):
  path.write_text("index_id\tcategory\ttext\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def tiny(sp_tokenizer):
  """A random tiny model with the suite's sentencepiece tokenizer; weights scaled up so the next-token
  distributions are far from uniform (a wrong position or window would change the numbers)."""
  cfg = LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size, max_seq_len=256)
  variables = Llama(cfg).init_variables(jax.random.key(0))
  variables = jax.tree_util.tree_map(lambda x: np.asarray(x) * 6.0, variables)
  return LoadedModel(config=cfg, variables=variables, lora_config=None, tokenizer=sp_tokenizer, path="tiny", meta={})


def _numpy_log_probs(loaded, ids):
  """log p(ids[i+1] | ids[:i+1]) from the model's full logits, log-softmax in numpy float64."""
  logits = np.asarray(Llama(loaded.config).apply(loaded.variables, np.asarray(ids, np.int32)[None]), np.float64)[0]
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  return (logits - logz[:, None])[np.arange(len(ids) - 1), ids[1:]]


def _fake_answers(monkeypatch, module, texts):
  """Generation replaced by fixed answers (in prompt order); returns the prompts it was given."""
  seen = []

  def fake(loaded, prompts, *, max_new_tokens, batch_size=16):
    seen.append([list(p) for p in prompts])
    return [common.Answer(text=texts[len(seen) - 1][i] if isinstance(texts[0], list) else texts[i])
            for i in range(len(prompts))]

  monkeypatch.setattr(module, "generate_answers", fake)
  return seen


# ---- bits per byte -------------------------------------------------------------------------------------

def _write_docs(tmp_path):
  path = tmp_path / "heldout.txt"
  path.write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
  return str(path)


def test_bits_per_byte_equals_numpy_on_the_models_logits(tiny, tmp_path):
  path = _write_docs(tmp_path)
  res, _ = bpb.run(tiny, bpb.Settings(path=path), batch_size=4)
  tok = tiny.tokenizer
  nll = tokens = 0
  for doc in DOCS:
    ids = np.array([tok.bos_id, *tok.encode(doc)])
    nll -= _numpy_log_probs(tiny, ids).sum()
    tokens += len(ids) - 1
  n_bytes, n_chars = sum(len(d.encode()) for d in DOCS), sum(len(d) for d in DOCS)
  assert res["n"] == 3 and res["tokens"] == tokens and res["bytes"] == n_bytes and res["chars"] == n_chars
  assert res["windows"] == 3  # every document fits the context: one pass each
  assert res["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
  assert res["bits_per_char"] == pytest.approx(nll / math.log(2) / n_chars, rel=1e-5)
  assert n_bytes > 2.5 * n_chars  # Telugu letters are 3 UTF-8 bytes: per char is not per byte


def test_windows_score_every_token_once_with_the_earliest_window():
  for n, w, s in [(5, 8, 4), (8, 8, 3), (9, 8, 3), (40, 8, 3), (40, 8, 7), (33, 16, 1), (100, 16, 8)]:
    spans = bpb.windows(n, w, s)
    scored = [j for start, end, first in spans for j in range(first, end)]
    assert scored == list(range(1, n))
    for start, end, first in spans:
      assert end - start <= w and start % s == 0 and first >= start + 1
      # each target is scored by the earliest window that holds it as a target
      assert all(min(t for t in range(0, n, s) if t + 1 <= j < t + w) == start for j in range(first, end))


def test_windowed_bits_per_byte_equals_numpy_over_the_same_windows(tiny, tmp_path):
  path = _write_docs(tmp_path)
  window, stride = 16, 5
  res, _ = bpb.run(tiny, bpb.Settings(path=path, window=window, stride=stride), batch_size=4)
  tok, nll, n_windows = tiny.tokenizer, 0.0, 0
  for doc in DOCS:
    ids = np.array([tok.bos_id, *tok.encode(doc)])
    assert len(ids) > window  # every document needs several windows here
    starts, by_start = list(range(0, len(ids), stride)), {}
    for j in range(1, len(ids)):  # target j: from the earliest window [s, s + window) that predicts it
      s = min(t for t in starts if t + 1 <= j < t + window)
      if s not in by_start:
        by_start[s] = _numpy_log_probs(tiny, ids[s:s + window])
      nll -= by_start[s][j - s - 1]
    n_windows += len(bpb.windows(len(ids), window, stride))
  assert res["windows"] == n_windows > 3 and (res["window"], res["stride"]) == (window, stride)
  assert res["bits_per_byte"] == pytest.approx(nll / math.log(2) / res["bytes"], rel=1e-5)
  one_pass, _ = bpb.run(tiny, bpb.Settings(path=path), batch_size=4)
  assert res["bits_per_byte"] != pytest.approx(one_pass["bits_per_byte"], rel=1e-4)  # less context, other score


def test_windowing_a_text_that_fits_equals_one_pass(tiny, tmp_path):
  path = _write_docs(tmp_path)
  longest = max(len(tiny.tokenizer.encode(d)) + 1 for d in DOCS)
  one, _ = bpb.run(tiny, bpb.Settings(path=path), batch_size=4)
  for window, stride in [(longest, 3), (longest + 7, 1), (200, 50)]:
    res, _ = bpb.run(tiny, bpb.Settings(path=path, window=window, stride=stride), batch_size=2)
    assert res["windows"] == 3
    assert res["bits_per_byte"] == pytest.approx(one["bits_per_byte"], rel=1e-6)


def test_documents_split_on_blank_lines_or_a_separator_line(tmp_path):
  p = tmp_path / "t.txt"
  p.write_text("ఒకటి\nరెండు\n\n \n\nమూడు  \n\n\n", encoding="utf-8")
  assert bpb.read_documents(str(p)) == ["ఒకటి\nరెండు", "మూడు"]
  p.write_text("ఒకటి\n\nరెండు\n" + "=" * 80 + "\nమూడు\n" + "=" * 80 + "\n", encoding="utf-8")
  assert bpb.read_documents(str(p), separator="=+") == ["ఒకటి\n\nరెండు", "మూడు"]


# ---- generated answers: metrics by hand ----------------------------------------------------------------

def test_tydiqa_metrics_by_hand_on_both_upstream_shapes(tiny, tmp_path, monkeypatch):
  items = {"te-1": {"question": "భారతదేశ రాజధాని ఏది?", "answer": "న్యూఢిల్లీ", "gold": "what", "pred": "what"},
           "te-2": {"question": "వారానికి ఎన్ని రోజులు?", "answer": "ఏడు", "gold": "how-num", "pred": "how-num"},
           "te-3": {"question": "గోదావరి ఏ సముద్రంలో కలుస్తుంది?", "answer": "బంగాళాఖాతం", "gold": "NONE",
                    "pred": "what"},
           "te-4": {"question": "తెలంగాణ రాజధాని ఏది?", "answer": "హైదరాబాదు", "gold": "what", "pred": "what"}}
  quist = tmp_path / "te.quist.json"
  quist.write_text(json.dumps({"score": {"Hard macro F1": 0.5}, "results": items}, ensure_ascii=False), "utf-8")
  jsonl = tmp_path / "te.jsonl"
  jsonl.write_text("".join(json.dumps({"question": v["question"], "answer": v["answer"]}, ensure_ascii=False) + "\n"
                           for v in items.values()), "utf-8")
  answers = ["న్యూఢిల్లీ.",                     # EM 1 (punctuation), F1 1, contains 1
             "ఏడు రోజులు",                      # EM 0, F1 2*(1/2*1)/(1/2+1) = 2/3, contains 1
             "బంగాళా\u200cఖాతం",                 # ZWNJ removed: EM 1, F1 1, contains 1
             "హైదరాబాదులో ఉంది"]               # case marker kept: EM 0, F1 0, contains 1
  for path in (quist, jsonl):
    prompts = _fake_answers(monkeypatch, tydiqa, answers)
    res, rows = tydiqa.run(tiny, tydiqa.Settings(path=str(path)))
    assert res["n"] == 4 and res["k"] == 0
    assert res["exact_match"] == pytest.approx(50.0)
    assert res["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert res["contains"] == pytest.approx(100.0)
    assert [r["reference"] for r in rows] == [v["answer"] for v in items.values()]
    assert items["te-2"]["question"] in prompts[0][1][-1].content
  # k = 2 without a train file: the first two are examples, not scored
  prompts = _fake_answers(monkeypatch, tydiqa, answers[2:])
  res, _ = tydiqa.run(tiny, tydiqa.Settings(path=str(quist), k=2))
  assert res["n"] == 2 and res["k"] == 2 and res["exact_match"] == pytest.approx(50.0)
  history = prompts[0][0]
  assert [t.role for t in history] == ["user", "assistant", "user", "assistant", "user"]
  assert history[1].content == "న్యూఢిల్లీ" and items["te-3"]["question"] in history[-1].content


def test_tydiqa_normalisation_keeps_case_markers():
  assert tydiqa.normalise(" “హైదరాబాదు”, తెలంగాణ। ") == "హైదరాబాదు తెలంగాణ"
  assert tydiqa.normalise("కంప్యూటర్\u200cలో") == "కంప్యూటర్లో"
  assert tydiqa.score("హైదరాబాదులో", ["హైదరాబాదు"]) == {"exact_match": 0.0, "f1": 0.0, "contains": 1.0}
  assert tydiqa.score("Seven Days!", ["seven days", "7"])["exact_match"] == 1.0


def test_mgsm_accuracy_of_the_last_number_by_hand(tiny, tmp_path, monkeypatch):
  path = tmp_path / "mgsm_te.tsv"
  path.write_text("సీత దగ్గర 3 పళ్ళు ఉన్నాయి. ఇంకో 4 కొంది. మొత్తం ఎన్ని?\t7\n"
                  "ఒక పెట్టెలో 12 పెన్నులు. 5 పెట్టెలలో ఎన్ని?\t60\n"
                  "రాము 1,000 రూపాయలు ఇచ్చాడు, 250 ఖర్చయింది. ఎంత మిగిలింది?\t750\n"
                  "10 నుండి 15 తీసివేస్తే?\t-5\n", encoding="utf-8")
  answers = ["3 + 4 = 7. సమాధానం 7.",          # right
             "12 x 5 = ౬౦",                     # Telugu digits: 60, right
             "1,000 - 250 = 750 రూపాయలు, 2 రోజుల్లో",  # last number is 2: wrong
             "తెలియదు"]                          # no number: wrong
  _fake_answers(monkeypatch, mgsm, answers)
  res, rows = mgsm.run(tiny, mgsm.Settings(path=str(path)))
  assert res == {"n": 4, "k": 0, "accuracy": 50.0, "no_number": 1}
  assert [r["prediction"] for r in rows] == [7.0, 60.0, 2.0, None]
  assert mgsm.last_number("సమాధానం -1,250.5") == -1250.5
  # exemplars JSON (te under a language key) as the few-shot train split
  ex = tmp_path / "exemplars.json"
  ex.write_text(json.dumps({"te": {"2": {"q": "ప్రశ్న: 2 + 2?", "a": "దశలవారీగా: 2 + 2 = 4. సమాధానం 4."},
                                   "1": {"q": "ప్రశ్న: 1 + 1?", "a": "సమాధానం 2."}}}, ensure_ascii=False), "utf-8")
  prompts = _fake_answers(monkeypatch, mgsm, answers)
  res, _ = mgsm.run(tiny, mgsm.Settings(path=str(path), train=str(ex), k=2))
  assert res["n"] == 4 and res["accuracy"] == 50.0
  assert [t.content for t in prompts[0][0][:4]] == ["ప్రశ్న: 1 + 1?", "సమాధానం 2.", "ప్రశ్న: 2 + 2?",
                                                   "దశలవారీగా: 2 + 2 = 4. సమాధానం 4."]


def test_translation_chrf_and_bleu_both_ways(tiny, tmp_path, monkeypatch):
  en = _tsv(tmp_path / "sib200_eng_Latn_test.tsv", [(i, c, e) for i, c, e, _ in PAIRS])
  te = _tsv(tmp_path / "sib200_tel_Telu_test.tsv", [(i, c, t) for i, c, _, t in PAIRS])
  exact = [[t for *_, t in PAIRS], [e for _, _, e, _ in PAIRS]]  # en->te answers, then te->en
  prompts = _fake_answers(monkeypatch, translation, exact)
  res, rows = translation.run(tiny, translation.Settings(en=en, te=te))
  assert res["n"] == 4 and len(rows) == 8
  for key in ("chrf_pp_en_te", "chrf_pp_te_en", "bleu_en_te", "bleu_te_en"):
    assert res[key] == pytest.approx(100.0)
  assert PAIRS[0][2] in prompts[0][0][-1].content and PAIRS[0][3] in prompts[1][0][-1].content
  hyps = [["పిల్లలు ఆడతారు.", "నీళ్ళు తాగండి.", "మేము వెళ్ళాము.", "సముద్రం."],
          ["Children play.", "Drink water every day.", "We went.", "A river."]]
  _fake_answers(monkeypatch, translation, hyps)
  res, _ = translation.run(tiny, translation.Settings(en=en, te=te, limit=3))
  refs = {"en_te": [t for *_, t in PAIRS[:3]], "te_en": [e for _, _, e, _ in PAIRS[:3]]}
  for k, d in enumerate(("en_te", "te_en")):
    assert res[f"chrf_pp_{d}"] == pytest.approx(sacrebleu.corpus_chrf(hyps[k][:3], [refs[d]], word_order=2).score)
    assert res[f"bleu_{d}"] == pytest.approx(sacrebleu.corpus_bleu(hyps[k][:3], [refs[d]]).score)
    assert 0 < res[f"chrf_pp_{d}"] < 100
  bad = _tsv(tmp_path / "te_shuffled.tsv", [(i, c, t) for i, c, _, t in reversed(PAIRS)])
  with pytest.raises(common.TaskDataError, match="line-aligned by index_id"):
    translation.read_pairs(en, bad)


# ---- likelihood classification -------------------------------------------------------------------------

def test_sib200_picks_the_most_likely_label_as_numpy_scores_it(tiny, tmp_path):
  path = _tsv(tmp_path / "sib200_tel_Telu_dev.tsv", [(i, c, t) for i, c, _, t in PAIRS[:3]])
  res, rows = sib200.run(tiny, sib200.Settings(path=path), batch_size=8)
  fmt = ChatFormat(tiny.tokenizer)
  cats, right = list(sib200.LABELS), 0
  for (_, cat, _, text), row in zip(PAIRS[:3], rows, strict=True):
    turns = [Turn("user", sib200.PROMPT.format(text))]
    start = len(fmt.encode_prompt(turns))
    scores = [_numpy_log_probs(tiny, fmt.encode([*turns, Turn("assistant", sib200.LABELS[c])]).ids)[start - 1:].sum()
              for c in cats]
    np.testing.assert_allclose([row["scores"][c] for c in cats], scores, rtol=1e-5)
    assert row["text"] == cats[int(np.argmax(scores))]
    right += row["text"] == cat
  assert res["n"] == 3 and res["accuracy"] == pytest.approx(100 * right / 3)
  assert res["chance"] == pytest.approx(100 / 7) and sum(res["predicted"].values()) == 3


# ---- registry ------------------------------------------------------------------------------------------

def test_settings_come_from_the_config_section_and_missing_files_are_skipped(tmp_path):
  import ml_collections

  present = _write_docs(tmp_path)
  section = ml_collections.ConfigDict({"bpb": {"path": present, "limit": 2, "stride": 4},
                                       "mgsm": {"path": str(tmp_path / "missing.tsv"), "k": 0},
                                       "tydiqa": {"path": ""}})
  settings = tasks.settings_from_config(section)
  assert settings["bpb"] == bpb.Settings(path=present, limit=2, stride=4)
  run, skipped = tasks.check_inputs(settings)
  assert list(run) == ["bpb"]
  assert skipped == {"mgsm": f"{tmp_path / 'missing.tsv'} not found", "tydiqa": "off (no path given)"}
  with pytest.raises(ValueError, match=r"config.tasks.mgsm: unknown settings \['shots'\]"):
    tasks.settings_from_config({"mgsm": {"shots": 3}})
  with pytest.raises(ValueError, match="unknown task"):
    tasks.settings_from_config({"squad": {}})


def test_a_file_not_in_its_upstream_shape_is_an_error_naming_file_and_line(tmp_path):
  p = tmp_path / "mgsm_te.tsv"
  p.write_text("రెండు + రెండు?\t4\nమూడు + మూడు?\tఆరు\n", encoding="utf-8")
  with pytest.raises(common.TaskDataError, match=r"mgsm_te.tsv:2: answer 'ఆరు' is not an integer"):
    mgsm.read_tsv(str(p))
  p = tmp_path / "sib.tsv"
  p.write_text("index_id\tcategory\ttext\n1\tsports\tఆట.\n2\tcooking\tవంట.\n", encoding="utf-8")
  with pytest.raises(common.TaskDataError, match=r"sib.tsv:3: category 'cooking' is not one of"):
    sib200.read_items(str(p))
  p.write_text("1\tsports\tఆట.\n", encoding="utf-8")
  with pytest.raises(common.TaskDataError, match=r"sib.tsv: line 1 must be the header"):
    common.read_flores_tsv(str(p))
  p = tmp_path / "qa.jsonl"
  p.write_text('{"question": "ఏది?", "answer": "ఇది"}\n{"question": "ఎవరు?"\n', encoding="utf-8")
  with pytest.raises(common.TaskDataError, match=r"qa.jsonl:2: invalid JSON"):
    tydiqa.read_items(str(p))
  p.write_text('{"question": "ఏది?", "answer": ["ఇది", "అది"], "id": "q1"}\n', encoding="utf-8")
  assert tydiqa.read_items(str(p)) == [{"id": "q1", "question": "ఏది?", "answers": ["ఇది", "అది"]}]
