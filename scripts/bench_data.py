"""Suite `data`: records/s of the clean and dedupe stages on generated Telugu records.

    python scripts/benchmark.py --suite data [--records 100000]

Records are made from a pool of Telugu words (random sentences, 1-3 exchanges), with 10% exact copies,
10% near copies (one word changed) and 5% faulty ones (English, repetition, broken script), so every
filter and both dedupe passes do real work. Timings include reading and writing the JSONL files; both
stages are single-process, so `cpu_seconds` (this process's CPU time) is the number to compare on a
busy machine, and wall-clock `seconds` the one a user waits.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

WORDS = ("తెలుగు భాష చాలా మధురమైన నేను ఉదయం ఆరు గంటలకు నిద్ర లేస్తాను మా ఊరిలో ఒక పెద్ద చెరువు ఉంది "
         "వర్షాకాలంలో రైతులు వరి నాట్లు వేస్తారు హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని గోదావరి నది మహారాష్ట్రలో పుట్టి "
         "బంగాళాఖాతంలో కలుస్తుంది పిల్లలు బడికి వెళ్ళే ముందు అల్పాహారం తినాలి సంక్రాంతి పండుగకు ఇంటి ముందు "
         "ముగ్గులు ఆరోగ్యంగా ఉండాలంటే రోజూ నీళ్ళు ఎక్కువగా తాగాలి పుస్తకం ధర రెండు వందల రూపాయలు సూర్యుడు తూర్పున "
         "ఉదయిస్తాడు అమ్మ వంటింట్లో పప్పు అన్నం వండుతోంది చెట్లు మనకు నీడను పండ్లను ఇస్తాయి").split()
QUESTIONS = ("ఏమిటి?", "ఎలా?", "ఎందుకు?", "గురించి చెప్పండి.", "వివరించండి.")


def add_args(parser) -> None:
  parser.add_argument("--records", type=int, default=100_000)
  parser.add_argument("--seed", type=int, default=0)


def generate(n: int, seed: int = 0):
  from telugu_jax.data.records import Conversation, Turn

  rng = random.Random(seed)

  def sentence(k: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(k)) + "."

  out: list = []
  for i in range(n):
    r = rng.random()
    if r < 0.10 and out:
      src = rng.choice(out)
      out.append(Conversation(f"g/{i}", src.turns, source="gen"))
      continue
    if r < 0.20 and out:
      src = rng.choice(out)
      words = src.turns[-1].content.split()
      words[rng.randrange(len(words))] = rng.choice(WORDS)
      out.append(Conversation(f"g/{i}", src.turns[:-1] + (Turn("assistant", " ".join(words)),), source="gen"))
      continue
    turns = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
      turns += [Turn("user", " ".join(rng.choice(WORDS) for _ in range(4)) + " " + rng.choice(QUESTIONS)),
                Turn("assistant", " ".join(sentence(rng.randint(6, 14)) for _ in range(rng.randint(1, 5))))]
    if r > 0.95:
      bad = rng.choice(("This answer was left in English by the translator completely.", "హహ" * 20, "భాష\ufffd"))
      turns[-1] = Turn("assistant", turns[-1].content + " " + bad)
    out.append(Conversation(f"g/{i}", tuple(turns), source="gen"))
  return out


def _fmt(counts: dict) -> str:
  return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def run(args) -> list[dict]:
  import sys

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo, if not installed
  from telugu_jax.data.clean import run_clean
  from telugu_jax.data.dedupe import run_dedupe
  from telugu_jax.data.records import write_jsonl

  with tempfile.TemporaryDirectory() as d:
    src = os.path.join(d, "gen.jsonl")
    write_jsonl(src, generate(args.records, args.seed))
    t0, p0 = time.perf_counter(), time.process_time()
    c = run_clean([src], os.path.join(d, "clean"), progress=False)
    t1, p1 = time.perf_counter(), time.process_time()
    dd = run_dedupe([os.path.join(d, "clean", "records.jsonl")], os.path.join(d, "dedupe"), progress=False)
    t2, p2 = time.perf_counter(), time.process_time()
  return [
      {"stage": "clean", "records_in": c["in"], "out": c["out"], "seconds": t1 - t0, "cpu_seconds": p1 - p0,
       "records_per_s": c["in"] / (t1 - t0), "dropped": _fmt(c["rejected"])},
      {"stage": "dedupe", "records_in": dd["in"], "out": dd["out"], "seconds": t2 - t1, "cpu_seconds": p2 - p1,
       "records_per_s": dd["in"] / (t2 - t1), "dropped": _fmt(dd["rejected"])},
      {"stage": "clean+dedupe", "records_in": c["in"], "out": dd["out"], "seconds": t2 - t0, "cpu_seconds": p2 - p0,
       "records_per_s": c["in"] / (t2 - t0), "dropped": ""},
  ]
