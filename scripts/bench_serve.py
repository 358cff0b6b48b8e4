"""Serving benchmark (suite `serve`): aggregate tokens/s of 1 vs N concurrent streaming users.

    python scripts/benchmark.py --suite serve                                # random tiny model, 1 and 16 users
    python scripts/benchmark.py --suite serve --preset demo --users 1,4,16 --max-tokens 128
    python scripts/benchmark.py --suite serve --checkpoint runs/demo/sft     # a real model directory

The server runs as users run it (`python -m telugu_jax.serve`, a subprocess, so the clients here do not
share its interpreter); each user is an `openai.AsyncOpenAI` stream of a different Telugu question,
greedy, `max_tokens` each. Every configuration is run twice untimed (compiles), then `--repeats` times;
the row is the median round. Tokens are the server's own count (`usage.completion_tokens`), so answers
that end early at eos count what they made. Columns: aggregate tokens/s = all users' tokens / wall time
of the round; per-user tokens/s = a user's tokens / its own stream time; time to first token; the
engine's batches for the round (requests x batches) and its decode time; speed-up = aggregate tokens/s over
the 1-user row's of the same path. `--engine-only` adds rows timed straight through the `Engine` in this
process (no HTTP, SSE or client), to tell what batching buys from what serving costs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

QUESTIONS = [  # written for this benchmark
    "తెలుగు భాష గురించి చెప్పండి.", "హైదరాబాదు ఏ రాష్ట్ర రాజధాని?", "వర్షాకాలంలో రైతులు ఏం చేస్తారు?",
    "ఒక చిన్న కవిత రాయండి.", "సంక్రాంతి పండుగ గురించి రాయండి.", "గోదావరి నది ఎక్కడ పుడుతుంది?",
    "ఆరోగ్యంగా ఉండాలంటే ఏం చేయాలి?", "సూర్యుడు ఏ దిక్కున ఉదయిస్తాడు?", "చెట్లు మనకు ఏం ఇస్తాయి?",
    "మీ పేరు ఏమిటి?", "ఈ పుస్తకం ధర ఎంత?", "ఆ సినిమా మీకు నచ్చిందా?", "పిల్లలు బడికి ఎప్పుడు వెళ్తారు?",
    "మా ఊరి చెరువు గురించి చెప్పండి.", "రేపు ఆటల పోటీలు ఉన్నాయా?", "నమస్కారం! మీరు ఎలా ఉన్నారు?",
]


def add_args(parser) -> None:
  parser.add_argument("--checkpoint", help="model directory to serve (default: a random model of --preset)")
  parser.add_argument("--preset", default="tiny", choices=("tiny", "smoke", "demo"),
                      help="size of the random model when no --checkpoint is given")
  parser.add_argument("--users", default="1,16", help="concurrent users per configuration, comma-separated")
  parser.add_argument("--max-tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3, help="timed rounds per configuration (median)")
  parser.add_argument("--batch-window-ms", type=float, default=20.0, help="the server's --batch-window-ms")
  parser.add_argument("--engine-only", action="store_true",
                      help="also time the batching engine in this process, without HTTP (rows path=engine)")
  parser.add_argument("--safety", action="store_true",
                      help="keep the server's safety filter on (default off: this measures decoding and batching)")


def random_model_dir(preset: str, workdir: str) -> str:
  """A random model of `preset` with a tokenizer trained on the bundled Telugu prose."""
  import importlib.resources

  import jax

  from telugu_jax.model.config import LlamaConfig
  from telugu_jax.model.io import save_model
  from telugu_jax.model.llama import Llama
  from telugu_jax.tokenizer import train_sentencepiece

  prose = (importlib.resources.files("telugu_jax") / "assets" / "demo" / "prose.txt").read_text(encoding="utf-8")
  lines = [line for line in prose.splitlines() if line.strip()]
  tok = train_sentencepiece(lines + ["user: ప్రశ్న\nassistant: జవాబు"], vocab_size=512)
  config = LlamaConfig.preset(preset, vocab_size=tok.vocab_size, max_seq_len=512)
  variables = jax.jit(Llama(config).init_variables)(jax.random.key(0))
  return save_model(os.path.join(workdir, preset), config, params=variables["params"], tokenizer=tok)


def start_server(checkpoint: str, port: int, window_ms: float, max_batch: int, safety: bool) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "telugu_jax.serve", "--checkpoint", checkpoint, "--name", "bench", "--port", str(port),
         "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms), "--max-tokens", "4096"]
  cmd += [] if safety else ["--no-safety"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # `-m telugu_jax.serve` from a checkout too
  proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while True:
    try:
      if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
        return proc
    except httpx.TransportError:
      pass
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise RuntimeError(f"the server did not start: {proc.stderr.read()[-2000:]}")
    time.sleep(0.2)


async def one_user(client, question: str, max_tokens: int) -> dict:
  t0 = time.perf_counter()
  first, tokens = None, 0
  stream = await client.chat.completions.create(
      model="bench", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=max_tokens,
      stream=True, stream_options={"include_usage": True})
  async for chunk in stream:
    if first is None and any(c.delta.content for c in chunk.choices):
      first = time.perf_counter() - t0
    if chunk.usage is not None:
      tokens = chunk.usage.completion_tokens
  seconds = time.perf_counter() - t0
  return {"tokens": tokens, "seconds": seconds, "ttft": first if first is not None else seconds}


async def one_round(url: str, users: int, max_tokens: int) -> dict:
  import openai

  async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one_user(client, QUESTIONS[i % len(QUESTIONS)], max_tokens)
                                     for i in range(users)))
    wall = time.perf_counter() - t0
  tokens = sum(r["tokens"] for r in results)
  return {"tokens": tokens, "wall_s": wall, "agg_tok_s": tokens / wall,
          "per_user_tok_s": statistics.median(r["tokens"] / r["seconds"] for r in results),
          "ttft_s": statistics.median(r["ttft"] for r in results)}


def engine_round(models: dict, users: int, max_tokens: int, window_s: float) -> dict:
  """The same round straight through `Engine` (no HTTP, no SSE, no client): what batching itself buys."""
  import threading

  from telugu_jax.serve.engine import Engine, Job

  served = models["bench"]
  engine = Engine(models, max_batch=max(users, 1), batch_window_s=window_s).start()
  try:
    done = [threading.Event() for _ in range(users)]
    results = [None] * users

    def sink(i):
      def call(kind, value):
        if kind != "delta":
          results[i] = value
          done[i].set()
      return call

    t0 = time.perf_counter()
    for i in range(users):
      ids = served.fmt.encode_prompt([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]).tolist()
      engine.submit(Job("bench", ids, max_tokens, sink(i), temperature=0))
    for e in done:
      e.wait()
    wall = time.perf_counter() - t0
  finally:
    engine.stop()
  tokens = sum(r.completion_tokens for r in results)
  return {"tokens": tokens, "wall_s": wall, "agg_tok_s": tokens / wall, "decode_s": engine.stats["decode_s"],
          "host_s": engine.stats["host_s"],
          "batches": " ".join(f"{k}x{v}" for k, v in sorted(engine.stats["batch_sizes"].items()))}


def run_engine_only(args, checkpoint: str, users_list: list[int]) -> list[dict]:
  from telugu_jax.serve.__main__ import load_models

  models = load_models(checkpoint, [], name="bench")
  rows = []
  for users in users_list:
    for _ in range(2):
      engine_round(models, users, args.max_tokens, args.batch_window_ms / 1000)
    rounds = sorted((engine_round(models, users, args.max_tokens, args.batch_window_ms / 1000)
                     for _ in range(args.repeats)), key=lambda r: r["agg_tok_s"])
    rows.append({"model": args.checkpoint or f"random {args.preset}", "path": "engine", "users": users,
                 "max_tokens": args.max_tokens, **rounds[len(rounds) // 2]})
  return rows


def run(args) -> list[dict]:
  import socket

  users_list = [int(u) for u in args.users.split(",")]
  with tempfile.TemporaryDirectory(prefix="bench-serve-") as workdir:
    checkpoint = args.checkpoint or random_model_dir(args.preset, workdir)
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = start_server(checkpoint, port, args.batch_window_ms, max(users_list), args.safety)
    rows = []
    try:
      for users in users_list:
        for _ in range(2):  # compiles the programs of the batch sizes this many users arrive in
          asyncio.run(one_round(url, users, args.max_tokens))
        rounds = []
        for _ in range(args.repeats):
          before = httpx.get(url + "/health").json()["engine"]
          r = asyncio.run(one_round(url, users, args.max_tokens))
          after = httpx.get(url + "/health").json()["engine"]
          r["batches"] = " ".join(f"{k}x{v - before['batch_sizes'].get(k, 0)}"  # requests x batches
                                  for k, v in sorted(after["batch_sizes"].items(), key=lambda kv: int(kv[0]))
                                  if v > before["batch_sizes"].get(k, 0))
          r["decode_s"] = after["decode_s"] - before["decode_s"]
          r["host_s"] = after["host_s"] - before["host_s"]
          rounds.append(r)
        best = sorted(rounds, key=lambda r: r["agg_tok_s"])[len(rounds) // 2]
        rows.append({"model": args.checkpoint or f"random {args.preset}", "path": "http", "safety": args.safety,
                     "users": users,
                     "max_tokens": args.max_tokens, **best})
    finally:
      proc.terminate()
      proc.wait(timeout=60)
    if args.engine_only:
      rows += run_engine_only(args, checkpoint, users_list)
  for path in ("http", "engine"):
    base = next((r["agg_tok_s"] for r in rows if r["users"] == 1 and r["path"] == path), None)
    for r in rows:
      if r["path"] == path:
        r["speedup"] = r["agg_tok_s"] / base if base else float("nan")
  return rows
