"""Suite `sft`: a whole SFT run, wall clock, through the real trainer (`telugu_jax.train.loop`).

    python scripts/benchmark.py --suite sft --preset 300m --pairs 10000 --epochs 3 --attention cudnn   # GPU
    python scripts/benchmark.py --suite sft --preset smoke --pairs 200 --epochs 1 --seq 256 --batch 8  # CPU

The plan's question: how long do 10K instruction pairs x 3 epochs take? This builds a base model directory
with random weights of `--preset` (the 32K vocabulary of the real base, whatever the tokenizer), a
sentencepiece tokenizer trained on the bundled text, and `--pairs` conversations assembled from the bundled
ones (each user turn with bundled answers joined to about `--pair-chars` characters, so their token counts
look like translated Alpaca pairs rather than one-line answers). Then `train_and_evaluate` with
configs/lora.py (or full): Grain loading, best-fit packing at `--seq`, jit, the final checkpoint and the
exported model directory are all inside the timed wall clock, and so is compilation (reported apart).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_args(p):
  p.add_argument("--preset", default="300m", choices=["smoke", "demo", "300m"])
  p.add_argument("--mode", default="lora", choices=["lora", "full"])
  p.add_argument("--pairs", type=int, default=10000)
  p.add_argument("--epochs", type=float, default=3.0)
  p.add_argument("--pair-chars", type=int, default=900, help="about this many characters per conversation")
  p.add_argument("--seq", type=int, default=1024)
  p.add_argument("--batch", type=int, default=32, help="packed rows per optimiser step")
  p.add_argument("--vocab", type=int, default=32000, help="model vocabulary (the tokenizer's is smaller)")
  p.add_argument("--tokenizer-vocab", type=int, default=4000)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
  p.add_argument("--loss-chunk", type=int, default=0)
  p.add_argument("--remat", action="store_true")
  p.add_argument("--workdir", default="", help="default: a temporary folder")


def make_pairs(n: int, pair_chars: int, seed: int = 0):
  from telugu_jax.data.records import Conversation, Turn
  from telugu_jax.demo import bundled_conversations

  convs = [c for c in bundled_conversations() if len(c.turns) == 2]
  answers = [c.turns[1].content for c in convs]
  rng = random.Random(seed)
  out = []
  for i in range(n):
    user = convs[i % len(convs)].turns[0].content
    parts = [convs[i % len(convs)].turns[1].content]
    while sum(len(p) for p in parts) + len(user) < pair_chars * rng.uniform(0.5, 1.5):
      parts.append(rng.choice(answers))
    out.append(Conversation(id=f"bench-{i:06d}", source="bench",
                            turns=[Turn("user", user), Turn("assistant", "\n".join(parts))]))
  return out


def run(args) -> list[dict]:
  import jax
  import numpy as np

  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.config import load_config
  from telugu_jax.data.records import write_jsonl
  from telugu_jax.demo import bundled_prose
  from telugu_jax.model import Llama, LlamaConfig
  from telugu_jax.model.io import save_model
  from telugu_jax.tokenizer import train_sentencepiece
  from telugu_jax.train.loop import train_and_evaluate
  from telugu_jax.train.settings import RunSettings

  work = args.workdir or tempfile.mkdtemp(prefix="bench_sft_")
  t0 = time.perf_counter()
  pairs = make_pairs(args.pairs, args.pair_chars)
  data = os.path.join(work, "train.jsonl")
  write_jsonl(data, pairs)
  tok = train_sentencepiece(bundled_prose() + [t.content for c in pairs[:300] for t in c.turns]
                            + ["user: ప్రశ్న\nassistant: జవాబు"] * 20, args.tokenizer_vocab)
  fmt = ChatFormat(tok)
  lengths = np.array([len(fmt.encode(c).ids) for c in pairs[:2000]])
  cfg = LlamaConfig.preset(args.preset, vocab_size=args.vocab, param_dtype="float32")
  base = os.path.join(work, "base")
  params = jax.jit(Llama(cfg).init_variables)(jax.random.key(0))["params"]
  save_model(base, cfg, params=jax.device_get(params), tokenizer=tok)
  del params
  setup_s = time.perf_counter() - t0

  c = load_config("lora")
  c.workdir = os.path.join(work, "run")
  c.base = base
  c.mode = args.mode
  c.data.train = (data,)
  c.data.validation = ()
  c.data.max_seq_len = args.seq
  c.data.batch_size = args.batch
  c.optim.warmup_steps = 20
  c.train.epochs = args.epochs
  c.train.dtype = args.dtype
  c.train.remat = args.remat
  c.train.attention = args.attention
  c.train.loss_chunk = args.loss_chunk
  c.train.log_every = 50
  c.train.eval_every = 10**9
  c.train.save_every = 10**9      # only the final checkpoint
  c.train.sample_every = 0
  c.mesh.devices = 1
  t1 = time.perf_counter()
  result = train_and_evaluate(RunSettings.from_config(c))
  wall = time.perf_counter() - t1
  with open(os.path.join(c.workdir, "metrics.jsonl")) as f:
    logs = [json.loads(line) for line in f]
  rejected_path = os.path.join(c.workdir, "rejected.jsonl")
  rejected = sum(1 for _ in open(rejected_path)) if os.path.exists(rejected_path) else 0
  steady = [r for r in logs if "tokens_per_s" in r and r["step"] > 1]  # the step-1 row holds compilation
  med = lambda k: float(np.median([r[k] for r in steady])) if steady and k in steady[0] else None  # noqa: E731
  return [{"preset": args.preset, "mode": args.mode, "pairs": args.pairs, "epochs": args.epochs,
           "tokens_per_pair": float(lengths.mean()), "rejected": rejected, "seq": args.seq, "batch": args.batch,
           "attention": args.attention, "loss_chunk": args.loss_chunk, "steps": result.steps, "wall_s": wall,
           **{f"run_{k}": v for k, v in result.timings.items()}, "bench_setup_s": setup_s,
           "tokens_per_s": med("tokens_per_s"), "mfu": med("mfu"),
           "final_loss": logs[-1].get("loss") if logs else None}]
