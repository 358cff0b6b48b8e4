"""Pairs from sampled answers: the ranking rules, every no-pair reason, a judge over a real loopback
OpenAI-compatible endpoint, the stage's books and resume, and one run with the smoke SFT model's sampler."""

import json
import math

import pytest

from telugu_jax.chat_format import ChatFormat
from telugu_jax.data.records import Conversation, RecordError, Turn, write_jsonl
from telugu_jax.data.stage import Stage
from telugu_jax.dpo.pairs import PairConfig, build_pairs_into, choose, parse_rating, repetition, rule_scores, run_pairs
from telugu_jax.dpo.records import iter_pairs
from telugu_jax.generate import Generation

PROMPT = (Turn("user", "భారతదేశ రాజధాని ఏది?"),)
GOOD = "భారతదేశ రాజధాని న్యూఢిల్లీ."
LOOPING = "రాజధాని రాజధాని రాజధాని రాజధాని రాజధాని రాజధాని"
ENGLISH = "The capital of India is New Delhi."


def test_rules():
  assert repetition("ఒకటి రెండు మూడు నాలుగు") == 0.0
  assert repetition(LOOPING) == pytest.approx(1 - 1 / 4)  # 4 word 3-grams, all the same
  assert repetition("ఒక వాక్యం.\nఒక వాక్యం.\nవేరే వాక్యం.") == pytest.approx(1 / 3)  # 1 of 3 lines repeats
  assert rule_scores(PROMPT, GOOD, "eos") == {"format": 1.0, "telugu": 1.0, "repetition": 1.0}
  english = rule_scores(PROMPT, ENGLISH, "stop")
  assert english["format"] == 0.25 and english["telugu"] == 0.0
  translate = (Turn("user", "ఈ వాక్యాన్ని ఆంగ్లంలోకి అనువదించండి: నేను బడికి వెళ్తాను."),)
  assert rule_scores(translate, "I go to school.", "eos")["telugu"] == 1.0  # its English is the point
  assert [parse_rating(x) for x in ("7", "Rating: 10/10", "ten", "I give it 1.")] == [6 / 9, 1.0, None, 0.0]


def test_choose_best_and_worst_and_reasons():
  cfg = PairConfig(k=3)
  best, worst, details = choose(PROMPT, [(LOOPING, "length"), (GOOD, "eos"), (ENGLISH, "eos")], cfg)
  assert (best, worst) == (1, 0) and details[1]["score"] == 3.0
  for cands, reason in (([(GOOD, "length"), (LOOPING, "length")], "no_good_answer"),
                        ([(GOOD, "eos"), (" " + GOOD, "eos")], "identical_responses"),
                        ([(GOOD, "eos"), ("భారతదేశ రాజధాని ఢిల్లీ.", "eos")], "no_preference")):
    with pytest.raises(RecordError) as e:
      choose(PROMPT, cands, PairConfig(k=2))
    assert e.value.reason == reason
  # An empty answer is always the worst; the judge alone can overrule the rules.
  assert choose(PROMPT, [(GOOD, "eos"), ("", "eos")], PairConfig(k=2))[:2] == (0, 1)
  judged = PairConfig(k=2, ranking="judge")
  assert choose(PROMPT, [(GOOD, "eos"), (ENGLISH, "eos")], judged, [0.1, 0.9])[:2] == (1, 0)
  with pytest.raises(RecordError) as e:
    choose(PROMPT, [(GOOD, "eos"), (ENGLISH, "eos")], judged, [0.5, None])
  assert e.value.reason == "judge_failed"
  assert choose(PROMPT, [(GOOD, "eos"), (ENGLISH, "eos")], PairConfig(k=2, ranking="both"), [0.0, 1.0])[2][1][
      "score"] == pytest.approx(1.0 + 0.0 + 1.0 + 2.0)


class ScriptedGenerator:
  """Stands in for telugu_jax.generate.Generator: answers from a script, by prompt text and sample index."""

  def __init__(self, fmt, script, max_seq_len=512):
    self.fmt, self.script, self.calls = fmt, script, 0
    self.config = type("C", (), {"max_seq_len": max_seq_len})()

  def generate(self, prompts, sampling, *, stop_strings=(), pad_batch_to=None):
    self.calls += 1
    assert pad_batch_to is not None and len(prompts) <= pad_batch_to
    out, seen = [], {}
    for ids in prompts:
      key = self.fmt.tokenizer.decode(ids.tolist())
      i = seen[key] = seen.get(key, -1) + 1
      text, finish = self.script[key.split("user: ")[-1].split("\nassistant:")[0]][i]
      out.append(Generation(ids=[], text=" " + text, finish_reason=finish))
    return out


def test_stage_books_judge_endpoint_and_resume(sp_tokenizer, tmp_path, fake_openai):
  from telugu_jax.data.translate.client import ChatClient

  fmt = ChatFormat(sp_tokenizer)
  convs = [Conversation.single("q/1", "భారతదేశ రాజధాని ఏది?", "న్యూఢిల్లీ."),
           Conversation.single("q/2", "మీ పేరు ఏమిటి?", "నా పేరు సీత."),
           Conversation(id="q/3", turns=(Turn("user", "నమస్కారం!"),)),      # a prompt without an answer is fine
           Conversation.single("q/4", "user: forged", "x")]                  # unusable prompt
  script = {"భారతదేశ రాజధాని ఏది?": [(LOOPING, "length"), (GOOD, "eos")],
            "మీ పేరు ఏమిటి?": [("నా పేరు సీత.", "eos"), ("నా పేరు సీత.", "eos")],
            "నమస్కారం!": [("నమస్కారం, చెప్పండి.", "eos"), ("Hello, hello, hello.", "stop")]}
  # The judge likes answers in Telugu script and dislikes loops, as a real one would.
  judge = fake_openai(lambda msgs: "2" if ("రాజధాని రాజధాని" in msgs[-1]["content"] or "Hello" in msgs[-1]["content"])
                      else "9")
  client = ChatClient(base_url=judge.url, model="judge", backoff_s=0.01, max_retries=3)
  out = tmp_path / "pairs"
  with Stage("dpo-pairs", out, progress=False) as stage:
    build_pairs_into(stage, ScriptedGenerator(fmt, script), fmt, convs, PairConfig(k=2, ranking="both"), client)
  s = stage.final
  assert (s["in"], s["out"], s["rejected"]) == (4, 2, {"identical_responses": 1, "forged_role_marker": 1})
  pairs = {p.id: p for p in iter_pairs(out / "records.jsonl")}
  assert (pairs["q/1"].chosen, pairs["q/1"].rejected) == (GOOD, LOOPING)
  assert (pairs["q/3"].chosen, pairs["q/3"].rejected) == ("నమస్కారం, చెప్పండి.", "Hello, hello, hello.")
  assert pairs["q/1"].meta["candidates"][1]["judge"] == pytest.approx(8 / 9)  # "9" on 1..10
  assert pairs["q/1"].prompt == convs[0].turns[:1]
  assert len(judge.answered()) == 6  # every sampled answer of the three usable prompts was rated
  # A rerun resumes: nothing already decided is sampled or judged again.
  gen = ScriptedGenerator(fmt, script)
  with Stage("dpo-pairs", out, progress=False, resume=True) as stage:
    build_pairs_into(stage, gen, fmt, convs, PairConfig(k=2, ranking="both"), client)
  assert gen.calls == 0 and stage.final["in"] == 4 and stage.final["out"] == 2 and len(judge.answered()) == 6


def test_pairs_from_the_smoke_sft_model(smoke_run, tmp_path):
  from telugu_jax.data.records import read_jsonl

  val = read_jsonl(smoke_run["workdir"] + "/data/val.jsonl")
  prompts = sorted((c for c in val if len(c.turns) == 2), key=lambda c: len(c.turns[0].content))[:4]
  write_jsonl(tmp_path / "prompts.jsonl", prompts)
  cfg = PairConfig(k=3, max_new_tokens=24, batch_prompts=4, min_gap=0.0, require_eos_chosen=False, seed=1)
  s = run_pairs(smoke_run["sft"], [str(tmp_path / "prompts.jsonl")], str(tmp_path / "out"), cfg, progress=False)
  assert s["in"] == 4 and s["out"] + sum(s["rejected"].values()) == 4 and s["out"] >= 1
  for p in iter_pairs(tmp_path / "out" / "records.jsonl"):
    cands = p.meta["candidates"]
    scores = [c["score"] if c["score"] is not None else -math.inf for c in cands]
    assert scores[p.meta["chosen_index"]] == max(scores) and scores[p.meta["rejected_index"]] == min(scores)
    assert p.chosen != p.rejected and len(cands) == 3
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["complete"] and summary["config"]["k"] == 3
