"""Host time per token of the row tracker (`telugu_jax.rows.RowTracker`), at two answer lengths.

    PYTHONPATH=. python scripts/bench_rows.py                      # 64 and 512 tokens, batch 8
    PYTHONPATH=. python scripts/bench_rows.py --lengths 64,512,2048 --batch 16

The decode loop waits for its host callback every step, so the callback's cost per token must not grow with
the answer. This drives the tracker as the loop does (one call per step with the batch's new tokens) on
Telugu prose from the bundled demo data, tokenised by a sentencepiece model trained on it (byte fallback on),
in the server's mode (stop strings, streaming, chat-template cleaning) and in `Generator.generate`'s mode
(stop strings, raw streaming). It reports the mean host time per token and row over the whole answer and over
its last 32 steps (the cost at that length). No model runs: only host time is measured.

Measured (2 shared CPU cores, load ~8, min of 3 runs, us per token and row; mean / last 32 steps):
                         64 tokens     512 tokens
  before (full re-decode each step: generate._HostRows, serve.engine._Rows, commit e1aeb51)
    server               37.2 / 44.8   133.7 / 257.1
    generate             15.6 / 19.4   108.6 / 200.9
  after (telugu_jax.rows.RowTracker)
    server (cleaned)     14.5 / 13.1    17.9 /  13.8
    generate (raw)       12.5 / 11.8    18.5 /  21.3
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from telugu_jax.chat_format import DEFAULT_TEMPLATE
from telugu_jax.rows import RowSpec, RowTracker
from telugu_jax.tokenizer import train_sentencepiece

PROSE = pathlib.Path(__file__).resolve().parents[1] / "telugu_jax" / "assets" / "demo" / "prose.txt"


def run(tok, ids: list[int], batch: int, template) -> tuple[float, float]:
  """(mean, last-32 mean) seconds per token and row."""
  n = len(ids)
  specs = [RowSpec(stops=DEFAULT_TEMPLATE.stop_strings, on_text=lambda _s: None) for _ in range(batch)]
  tracker = RowTracker(tok, specs, batch, eos_id=tok.eos_id, max_steps=n + 1, template=template)
  done = np.zeros(batch, bool)
  times = []
  for step in range(n):
    tok_b = np.full(batch, ids[step], np.int32)
    t0 = time.perf_counter()
    tracker(tok_b, np.int32(step), done)
    times.append(time.perf_counter() - t0)
  assert all(r.reason is None for r in tracker.rows), "the text must not end early (pick text without '\\nuser:')"
  return float(np.mean(times)) / batch, float(np.mean(times[-32:])) / batch


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--lengths", default="64,512")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3, help="the minimum of this many runs is reported")
  args = p.parse_args()
  text = PROSE.read_text(encoding="utf-8")
  tok = train_sentencepiece(text.splitlines(), vocab_size=800)
  ids = tok.encode(text)
  print(f"tokenizer: sentencepiece bpe, vocab {tok.vocab_size}; batch {args.batch}; host time per token and row")
  for mode, template in (("server (cleaned)", DEFAULT_TEMPLATE), ("generate (raw)", None)):
    for n in (int(x) for x in args.lengths.split(",")):
      best = min((run(tok, ids[:n], args.batch, template) for _ in range(args.repeats)), key=lambda r: r[0])
      print(f"  {mode:17s} {n:5d} tokens: mean {best[0] * 1e6:6.1f} us, last 32 steps {best[1] * 1e6:6.1f} us")


if __name__ == "__main__":
  main()
