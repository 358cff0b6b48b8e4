"""Build preference pairs from the SFT model's own answers: sample k per prompt, rank, keep best and worst.

    python -m telugu_jax.dpo pairs --model runs/lora --in data/sft/val.jsonl --out runs/prefs/self -k 4 \\
        [--judge-url http://127.0.0.1:8000/v1 --judge-model NAME]

Ranking by rules (each in [0, 1], added with weights):
  format      finish_reason "eos" (the model ended its answer) 1; "stop" (it went on to invent the next
              `user:` turn) 0.25; "length" (cut at max_new_tokens) 0
  telugu      Telugu letters among all letters (telugu_jax.data.clean.telugu_ratio); 1 when the prompt
              is a translation task (its English is the point)
  repetition  1 - the larger of: repeated word 3-grams / 3-grams, repeated lines / lines
An empty answer scores -inf. With a judge (any OpenAI-compatible endpoint, through the data pipeline's
client), each answer also gets a 1-10 rating mapped to [0, 1] and weighted; `ranking="judge"` uses the
judge alone (an answer the judge did not rate is then left out).

The best-scored answer becomes `chosen`, the worst `rejected`. A prompt yields no pair, with its reason in
rejected.jsonl, when: no_good_answer (no candidate ended with eos; `require_eos_chosen`), no_preference
(best - worst < `min_gap`), identical_responses, judge_failed, or the prompt is unusable (bad_turns,
too_long). Runs on the shared stage runner: resumable by prompt id, counts in summary.json; each pair's
meta keeps every candidate's score and finish reason for auditing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from telugu_jax.chat_format import ChatFormat, ChatFormatError
from telugu_jax.data.clean import TRANSLATION_TASK, telugu_ratio
from telugu_jax.data.records import Conversation, RecordError, Turn, iter_jsonl
from telugu_jax.data.stage import Stage
from telugu_jax.dpo.records import make_pair

JUDGE_PROMPT = """You rate answers of a Telugu assistant. Judge correctness, helpfulness and natural, fluent \
Telugu (unless the user asked for another language). Reply with one integer from 1 (useless) to 10 (excellent), \
nothing else."""
_INT = re.compile(r"\b(10|[1-9])\b")
FORMAT_SCORES = {"eos": 1.0, "stop": 0.25, "length": 0.0}


@dataclasses.dataclass(frozen=True)
class PairConfig:
  k: int = 4                      # answers sampled per prompt
  temperature: float = 0.9
  top_p: float = 0.95
  max_new_tokens: int = 256
  seed: int = 0
  batch_prompts: int = 8          # prompts per generate call (k rows each); one compiled program
  ranking: str = "rules"          # "rules" | "judge" | "both"
  w_format: float = 1.0
  w_telugu: float = 1.0
  w_repetition: float = 1.0
  w_judge: float = 2.0
  min_gap: float = 0.1            # best - worst below this: no preference to learn
  require_eos_chosen: bool = True

  def __post_init__(self):
    if self.k < 2:
      raise ValueError(f"k must be at least 2 (a pair needs two answers), got {self.k}")
    if self.ranking not in ("rules", "judge", "both"):
      raise ValueError(f"ranking={self.ranking!r}; choose 'rules', 'judge' or 'both'")


def repetition(text: str) -> float:
  """The larger of repeated word 3-grams / 3-grams and repeated lines / lines, in [0, 1]."""
  words = text.split()
  grams = list(zip(words, words[1:], words[2:], strict=False))
  gram_frac = 1 - len(set(grams)) / len(grams) if grams else 0.0
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  line_frac = 1 - len(set(lines)) / len(lines) if lines else 0.0
  return max(gram_frac, line_frac)


def rule_scores(prompt: Sequence[Turn], text: str, finish_reason: str) -> dict[str, float]:
  """Each rule's score in [0, 1] for one answer (see the module docstring)."""
  translation = any(TRANSLATION_TASK.search(t.content) for t in prompt if t.role == "user")
  return {"format": FORMAT_SCORES.get(finish_reason, 0.0),
          "telugu": 1.0 if translation else telugu_ratio(text)[0],
          "repetition": 1.0 - repetition(text)}


def parse_rating(reply: str) -> float | None:
  """A judge's 1-10 rating mapped to [0, 1], or None when the reply holds none."""
  m = _INT.search(reply)
  return None if m is None else (int(m.group(1)) - 1) / 9.0


def total_score(rules: dict[str, float], judge: float | None, cfg: PairConfig, text: str) -> float:
  if not text.strip():
    return -math.inf
  if cfg.ranking == "judge":
    return -math.inf if judge is None else judge
  s = cfg.w_format * rules["format"] + cfg.w_telugu * rules["telugu"] + cfg.w_repetition * rules["repetition"]
  if cfg.ranking == "both" and judge is not None:
    s += cfg.w_judge * judge
  return s


def _judge(client, prompts: list[list[Turn]], answers: list[str]) -> list[float | None]:
  """One rating per (prompt, answer), None where the request failed or the reply had no rating."""
  from telugu_jax.data.translate.client import Completion

  requests = []
  for turns, answer in zip(prompts, answers, strict=True):
    dialogue = "\n".join(f"{t.role.upper()}: {t.content}" for t in turns)
    requests.append([{"role": "system", "content": JUDGE_PROMPT},
                     {"role": "user", "content": f"{dialogue}\n\nANSWER TO RATE:\n{answer}"}])
  out: list[float | None] = [None] * len(requests)

  def done(i: int, result: Completion | Exception) -> None:
    out[i] = None if isinstance(result, Exception) else parse_rating(result.text)

  client.run(requests, done)
  return out


def choose(prompt: Sequence[Turn], candidates: Sequence[tuple[str, str]], cfg: PairConfig,
           ratings: Sequence[float | None] | None = None) -> tuple[int, int, list[dict]]:
  """(best index, worst index, per-candidate details) for (text, finish_reason) candidates; raises
  `RecordError` with the reason when they make no pair."""
  details = []
  for i, (text, finish) in enumerate(candidates):
    rules = rule_scores(prompt, text, finish)
    judge = ratings[i] if ratings is not None else None
    details.append({"score": total_score(rules, judge, cfg, text), "finish": finish, **rules,
                    **({"judge": judge} if ratings is not None else {})})
  scores = [d["score"] for d in details]
  usable = [i for i, s in enumerate(scores) if s > -math.inf]
  if cfg.ranking == "judge" and len(usable) < 2:
    raise RecordError(f"the judge rated {len(usable)} of {len(scores)} answers", reason="judge_failed")
  pool = [i for i in usable if candidates[i][1] == "eos"] if cfg.require_eos_chosen else usable
  if not pool:
    raise RecordError("no sampled answer ended with eos", reason="no_good_answer")
  best = max(pool, key=lambda i: scores[i])
  worst = min((i for i in range(len(scores)) if i != best), key=lambda i: scores[i])
  if candidates[best][0].strip() == candidates[worst][0].strip():
    raise RecordError("the best and worst answers are the same text", reason="identical_responses")
  if scores[best] - scores[worst] < cfg.min_gap:
    raise RecordError(f"best {scores[best]:.3f} - worst {scores[worst]:.3f} < min_gap {cfg.min_gap}",
                      reason="no_preference")
  return best, worst, details


def _prompt_turns(conv: Conversation) -> tuple[Turn, ...]:
  """The conversation up to its last user turn (a trailing reference answer is not part of the prompt)."""
  turns = conv.turns[:-1] if conv.turns and conv.turns[-1].role == "assistant" else conv.turns
  return tuple(turns)


def build_pairs_into(stage: Stage, generator, fmt: ChatFormat, conversations: Sequence[Conversation],
                     cfg: PairConfig, judge_client: Any = None) -> None:
  """Sample, rank and keep or reject every conversation's prompt into `stage` (skipping ones already done)."""
  from telugu_jax.generate import SamplingConfig
  from telugu_jax.inference import answer_batch

  if cfg.ranking != "rules" and judge_client is None:
    raise ValueError(f"ranking={cfg.ranking!r} needs a judge client (--judge-url and --judge-model)")
  todo = []
  for conv in conversations:
    if stage.done(conv.id):
      continue
    stage.count_in()
    prompt = _prompt_turns(conv)
    try:
      ids = fmt.encode_prompt(prompt)
    except ChatFormatError as e:
      stage.reject(e.reason, record=conv, detail=str(e))
      continue
    if len(ids) + cfg.max_new_tokens > generator.config.max_seq_len:
      stage.reject("too_long", record=conv, detail=f"{len(ids)} prompt tokens + max_new_tokens {cfg.max_new_tokens} "
                   f"exceed the model's {generator.config.max_seq_len}")
      continue
    todo.append((conv, prompt, ids))
  rows = cfg.batch_prompts * cfg.k
  for start in range(0, len(todo), cfg.batch_prompts):
    chunk = todo[start:start + cfg.batch_prompts]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              seed=cfg.seed + start)
    # One batch per chunk, kept in order (k samples of a prompt side by side); ranked and flushed per chunk so a
    # killed run resumes.
    gens = answer_batch(generator, [ids for _, _, ids in chunk for _ in range(cfg.k)], sampling,
                        stop_strings=fmt.template.stop_strings, batch_size=rows, sort=False)
    cands = [[(g.text.strip(), g.finish_reason) for g in gens[j * cfg.k:(j + 1) * cfg.k]] for j in range(len(chunk))]
    ratings = None
    if cfg.ranking != "rules":
      flat = _judge(judge_client, [list(p) for _, p, _ in chunk for _ in range(cfg.k)],
                    [t for c in cands for t, _ in c])
      ratings = [flat[j * cfg.k:(j + 1) * cfg.k] for j in range(len(chunk))]
    for j, (conv, prompt, _) in enumerate(chunk):
      try:
        best, worst, details = choose(prompt, cands[j], cfg, ratings[j] if ratings else None)
        stored = [{**d, "score": None if d["score"] == -math.inf else round(d["score"], 4)} for d in details]
        pair = make_pair(conv.id, "sft-samples", [(t.role, t.content) for t in prompt], cands[j][best][0],
                         cands[j][worst][0], "", candidates=stored, chosen_index=best, rejected_index=worst)
      except RecordError as e:
        stage.reject(e.reason, record=conv, detail=str(e),
                     raw={"candidates": [{"text": t, "finish": f} for t, f in cands[j]]})
        continue
      stage.keep(pair)
    stage.flush()


def run_pairs(model_dir: str, paths: Sequence[str], out_dir: str, cfg: PairConfig = PairConfig(), *,
              judge_client: Any = None, resume: bool = True, progress: bool = True) -> dict:
  """The pairs stage: out_dir/{records,rejected}.jsonl (pairs JSONL) and summary.json."""
  from telugu_jax.generate import Generator
  from telugu_jax.model.io import load_model

  loaded = load_model(model_dir)
  if loaded.tokenizer is None:
    raise ValueError(f"{model_dir} has no tokenizer/ folder")
  fmt = loaded.chat_format()
  generator = Generator.from_loaded(loaded)
  convs: list[Conversation] = []
  bad: list[tuple[RecordError, str]] = []
  for p in paths:
    convs.extend(iter_jsonl(p, on_error=lambda e, line: bad.append((e, line))))
  with Stage("dpo-pairs", out_dir, resume=resume, progress=progress, total=len(convs) + len(bad),
             unit="prompt", inputs=paths) as stage:
    for e, line in bad:
      if not stage.done(e.where):
        stage.count_in()
        stage.reject(e.reason, raw=line, where=e.where, detail=str(e), key=e.where)
    stage.stats.update({"model": os.path.abspath(model_dir), "config": dataclasses.asdict(cfg)})
    build_pairs_into(stage, generator, fmt, convs, cfg, judge_client)
  return stage.final
