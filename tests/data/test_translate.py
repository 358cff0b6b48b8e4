"""Translation through an OpenAI-compatible endpoint: a real loopback HTTP server started here answers
canned translations, sometimes 429/500. Protected spans survive, retries happen, the cache stops
repeats, and a job killed half-way and restarted never gets an answer for the same text twice."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from telugu_jax.config import load_config
from telugu_jax.data.records import Conversation, read_jsonl, write_jsonl
from telugu_jax.data.settings import TranslateConfig
from telugu_jax.data.translate import run_translate, split_sentences
from telugu_jax.data.translate.protect import PlaceholderError, mask, split_code, unmask

from .conftest import assert_books_balance

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "data.py")

CANNED = {  # masked English -> Telugu, as a translator would answer
    "What is the capital of India?": "భారతదేశ రాజధాని ఏది?",
    "The capital of India is New Delhi.": "భారతదేశ రాజధాని న్యూఢిల్లీ.",
    "Read ⟦0⟧ for ⟦1⟧ tips.": "⟦1⟧ చిట్కాల కోసం ⟦0⟧ చదవండి.",
    "Write to ⟦0⟧ before ⟦1⟧ o'clock.": "⟦1⟧ గంటల లోపు ⟦0⟧ కి రాయండి.",
    "Run this:": "ఇది నడపండి:",
    "Then check the output.": "తర్వాత ఫలితం చూడండి.",
    "Say hello to ⟦0⟧.": "⟦0⟧ కి నమస్కారం చెప్పండి.",
    "Greet ⟦0⟧ politely.": "మర్యాదగా నమస్కరించండి.",  # drops the token: must be rejected
}


def canned(messages):
  text = messages[-1]["content"]
  return CANNED.get(text, "అనువాదం: " + text)


def test_protect_roundtrip():
  text = "Mail a.b@example.org or see https://example.com/x?y=1, use {name} and %s, `ls -la` at 10:30 for 2.5% off."
  masked, originals = mask(text)
  assert "example" not in masked and "10:30" not in masked and "{name}" not in masked
  assert unmask(masked, originals) == text
  with pytest.raises(PlaceholderError):
    unmask(masked.replace("⟦1⟧", ""), originals)
  with pytest.raises(PlaceholderError):
    unmask(masked + " ⟦0⟧", originals)
  m2, o2 = mask(text, style="indictrans")
  assert "<ID0>" in m2 and unmask(m2, o2, style="indictrans") == text
  code = "Run:\n```py\nprint(1)\n```\nDone."
  assert "".join(p for _, p in split_code(code)) == code and [c for c, _ in split_code(code)] == [False, True, False]


def test_split_sentences_reassembles():
  text = "First one. Second one is longer, with a comma and more words!\n\nThird?  Fourth."
  for max_chars in (10, 25, 400):
    parts = split_sentences(text, max_chars)
    assert "".join(p for _, p in parts) == text
    assert all(len(p) <= max_chars for u, p in parts if u)
  assert [p for u, p in split_sentences(text) if u] == ["First one.", "Second one is longer, with a comma and more "
                                                        "words!", "Third?", "Fourth."]


def _cfg(url, **over):
  args = [f"--config.translate.base_url={url}", "--config.translate.backoff_s=0.01",
          "--config.translate.concurrency=4"] + [f"--config.translate.{k}={v}" for k, v in over.items()]
  return TranslateConfig.from_dict(load_config(CONFIG, args).translate)


def test_translate_endpoint(tmp_path, fake_openai):
  server = fake_openai(canned)
  recs = [
      Conversation.single("r0", "What is the capital of India?", "The capital of India is New Delhi."),
      Conversation.single("r1", "Read https://example.com/guide for 5 tips.",
                          "Write to help@example.com before 6 o'clock."),
      Conversation.single("r2", "Run this:\n```python\nprint('hi')\n```\nThen check the output.",
                          "Say hello to {name}."),
      Conversation.single("r3", "Greet {name} politely.", "సరే."),            # the translator loses a token
      Conversation.single("r4", "FAIL400 please", "The capital of India is New Delhi."),  # a 400: no retry
  ]
  write_jsonl(tmp_path / "in.jsonl", recs)
  cache = str(tmp_path / "cache.sqlite")
  s = run_translate([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), _cfg(server.url), cache_path=cache,
                    progress=False)
  s, rejected = assert_books_balance(tmp_path / "out")
  out = {r.id: [t.content for t in r.turns] for r in read_jsonl(tmp_path / "out" / "records.jsonl")}
  assert out["r0"] == ["భారతదేశ రాజధాని ఏది?", "భారతదేశ రాజధాని న్యూఢిల్లీ."]
  assert out["r1"] == ["5 చిట్కాల కోసం https://example.com/guide చదవండి.", "6 గంటల లోపు help@example.com కి రాయండి."]
  assert out["r2"] == ["ఇది నడపండి:\n```python\nprint('hi')\n```\nతర్వాత ఫలితం చూడండి.", "{name} కి నమస్కారం చెప్పండి."]
  assert {r["id"]: r["reason"] for r in rejected} == {"r3": "placeholder_lost", "r4": "translate_failed"}
  assert not any("print(" in t for t, _ in server.log)       # code blocks are never sent
  assert server.attempts["FAIL400 please"] == 1               # a 400 is not retried
  statuses = Counter(st for _, st in server.log)
  assert statuses[429] > 0 and statuses[500] > 0 and s["retries"] == statuses[429] + statuses[500]
  assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0 and s["estimated_cost_usd"] > 0
  assert max(Counter(server.answered()).values()) == 1

  n = len(server.log)  # run again: everything answered before comes from the cache
  s2 = run_translate([str(tmp_path / "in.jsonl")], str(tmp_path / "out2"), _cfg(server.url), cache_path=cache,
                     progress=False)
  assert [t for t, _ in server.log[n:]] == ["FAIL400 please"] and s2["cache_hits"] == s2["units"] - 1

  # a record that failed for good (an outage, a bad request) is retried by the next run, the rest kept
  s3 = run_translate([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), _cfg(server.url), cache_path=cache,
                     progress=False)
  assert server.attempts["FAIL400 please"] == 3 and s3["retried"] == 1 and s3["sent"] == 0
  assert (s3["in"], s3["out"], s3["rejected"]) == (s["in"], s["out"], s["rejected"])
  assert_books_balance(tmp_path / "out")


SUBJECTS = ["The farmer", "My sister", "The teacher", "Our neighbour", "The old king"]
ACTIONS = ["waters the garden", "reads a long book", "sings a sweet song", "cooks rice and dal",
           "walks to the river", "writes a letter", "feeds the cows", "paints the wall"]


def test_kill_half_way_and_resume(tmp_path, fake_openai):
  server = fake_openai(canned)
  server.hold_after = 15
  recs = [Conversation.single(f"k{i}", f"{s} {a} every morning.", f"Yes, {s.lower()} {a}.")
          for i, (s, a) in enumerate((s, a) for s in SUBJECTS for a in ACTIONS)]
  write_jsonl(tmp_path / "in.jsonl", recs)
  units = {t.content for r in recs for t in r.turns}
  cmd = [sys.executable, "-m", "telugu_jax.data", "translate", "--in", str(tmp_path / "in.jsonl"), "--out",
         str(tmp_path / "out"), "--config", CONFIG, "--quiet", f"--config.translate.base_url={server.url}",
         "--config.translate.backoff_s=0.01", "--config.translate.concurrency=4", "--config.translate.chunk=8",
         f"--config.translate.cache={tmp_path / 'cache.sqlite'}"]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.time() + 60
  rows = 0
  while time.time() < deadline:  # wait until 15 answers are committed and more requests hang in flight
    if server.hanging and os.path.exists(tmp_path / "cache.sqlite"):
      db = sqlite3.connect(tmp_path / "cache.sqlite")
      try:
        rows = db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
      except sqlite3.OperationalError:
        rows = 0
      db.close()
      if rows == 15:
        break
    assert proc.poll() is None, proc.stderr.read().decode()
    time.sleep(0.05)
  assert rows == 15
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "out" / "summary.json").exists()
  first_run = len(server.log)
  server.hold_after = None
  server.release.set()

  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  s, rejected = assert_books_balance(tmp_path / "out")
  assert s["in"] == len(recs) and s["out"] == len(recs) and rejected == []
  assert s["cache_hits"] >= 15
  answered = Counter(server.answered())
  assert set(answered) == units and max(answered.values()) == 1  # each text answered (and paid) once
  # texts sent again after the restart are exactly those whose first try was never answered (hung at the kill)
  hung_before = {t for t, st in server.log[:first_run] if st == "hung"}
  resent = {t for t, _ in server.log[first_run:]} & {t for t, _ in server.log[:first_run]}
  assert resent <= hung_before | {t for t, st in server.log[:first_run] if st in (429, 500)}
  assert not resent & set(server.answered()[:15])
  out = read_jsonl(tmp_path / "out" / "records.jsonl")
  assert sorted(r.id for r in out) == sorted(r.id for r in recs)
  assert all(t.content == "అనువాదం: " + orig.content for r in out
             for t, orig in zip(r.turns, next(x for x in recs if x.id == r.id).turns, strict=True))
  assert json.loads(done.stdout.strip().splitlines()[-1])["out"] == len(recs)


# ---- IndicTrans2 path on a tiny random seq2seq model made here ----------------------------------------
SENTS = ["The farmer waters the garden.", "My sister reads a book.", "The teacher sings.", "Run this:",
         "Then stop.", "Hello there.", "The old king walks to the river with his two brothers, slowly,"]


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory):
  import torch
  import transformers
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers

  d = tmp_path_factory.mktemp("it2")
  # word-level, so the (random) output decodes to words and differs visibly from input to input
  tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.train_from_iterator(SENTS + ["eng_Latn tel_Telu", "తెలుగు భాష చాలా మధురమైన భాష ."],
                          trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                    show_progress=False))
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                              eos_token="</s>", unk_token="<unk>")
  fast.save_pretrained(d)
  torch.manual_seed(0)
  cfg = transformers.BartConfig(vocab_size=tok.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1,
                                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                                decoder_ffn_dim=24, max_position_embeddings=128, init_std=0.5, pad_token_id=0,
                                bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
  transformers.BartForConditionalGeneration(cfg).eval().save_pretrained(d)
  return str(d)


def test_indictrans2_batching_cache_split_reassembly(tmp_path, tiny_seq2seq):
  import torch
  import transformers

  from telugu_jax.data.translate import Translator
  from telugu_jax.data.translate.cache import TranslationCache
  from telugu_jax.data.translate.indictrans2 import IndicTrans2Backend

  # independent reference: the model called on one sentence at a time, with the IndicTrans2 tag prefix
  tok = transformers.AutoTokenizer.from_pretrained(tiny_seq2seq)
  net = transformers.AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq).eval()

  def ref(sentence):
    enc = tok(["eng_Latn tel_Telu " + sentence], return_tensors="pt")
    with torch.inference_mode():
      out = net.generate(**enc, max_new_tokens=6, num_beams=1, do_sample=False)
    return tok.batch_decode(out, skip_special_tokens=True)[0].strip()

  backend = IndicTrans2Backend(tiny_seq2seq, batch_size=3, max_new_tokens=6, device="cpu")
  backend.processor = None  # the toolkit's own pre/post-processing is not what this test checks
  cache = TranslationCache(tmp_path / "c.sqlite")
  tr = Translator(backend, cache, max_sentence_chars=40)
  texts = [f"{SENTS[0]} {SENTS[1]}\n{SENTS[2]}", f"{SENTS[3]}\n```py\nx = 1\n```\n{SENTS[4]}", SENTS[5],
           SENTS[6], "తెలుగు వాక్యం."]
  out = tr.translate_texts(texts)
  assert len({ref(x) for x in SENTS}) >= 5  # the noise differs by input, so a swapped piece would show
  long_a, long_b = "The old king walks to the river with", "his two brothers, slowly,"  # cut at 40 characters
  assert out[0] == f"{ref(SENTS[0])} {ref(SENTS[1])}\n{ref(SENTS[2])}"
  assert out[1] == f"{ref(SENTS[3])}\n```py\nx = 1\n```\n{ref(SENTS[4])}"    # code verbatim, prose translated
  assert out[2] == ref(SENTS[5])
  assert out[3] == f"{ref(long_a)} {ref(long_b)}"                           # a long sentence split, rejoined
  assert out[4] == "తెలుగు వాక్యం."                                         # nothing to translate: not sent
  assert [len(b) for b in backend.batches] == [3, 3, 2]                     # 8 unique units in batches of 3
  lengths = [n for b in backend.batches for n in b]
  assert lengths == sorted(lengths)                                         # length-sorted batches
  assert tr.stats["sent"] == 8 and len(cache) == 8

  again = Translator(backend, cache, max_sentence_chars=40).translate_texts(texts)
  assert again == out and len(backend.batches) == 3                         # all from the cache: no new batch

  write_jsonl(tmp_path / "in.jsonl", [Conversation.single("a", texts[0], texts[2])])
  s = run_translate([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), _cfg("unused", backend="indictrans2"),
                    backend=backend, cache_path=str(tmp_path / "c.sqlite"), progress=False)
  assert s["out"] == 1 and s["cache_hits"] == 4 and s["sent"] == 0
  assert read_jsonl(tmp_path / "out" / "records.jsonl")[0].turns[1].content == out[2]
