"""Decode benchmark (suite `decode`): prefill and decode tokens/s of `telugu_jax.generate`, beside Hugging Face
`generate` on the same machine in the same run.

    python scripts/benchmark.py --suite decode                                   # demo and 300m, batch 1 and 32
    python scripts/benchmark.py --suite decode --presets demo --batches 1,8 --new-tokens 64 --no-hf

Random weights, random prompts of `--prompt-len` tokens (equal lengths, so HF needs no padding), greedy, no
eos, so every row makes exactly `--new-tokens` (N) tokens. Prefill and decode are timed apart, each as the
minimum of `--repeats` runs after a warm-up (the minimum is the estimate least disturbed by other work on a
shared machine):
  ours: `generate.prefill` (prompt -> cache + next logits) and `generate.decode` (the jitted while_loop from
        that cache: N steps, N forward passes), the same two functions `Generator.generate` runs as one program;
  HF:   the prefill forward `generate` runs (cache on, `logits_to_keep=1`), and `generate` continuing from a
        prefilled cache of T-1 tokens (N new tokens, N forward passes of one token), greedy.
Tokens/s count all rows: prefill B*T / seconds, decode B*N / seconds. Our decode runs without stop strings or
streaming (the loop never leaves the device); JAX compile times are reported apart. Float32 on both sides by
default (bf16 matmuls are slow on most CPUs).
"""

from __future__ import annotations

import copy
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from telugu_jax.generate import DecodeOptions, SamplingConfig, decode, prefill, sampling_knobs
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.llama import Llama


def add_args(parser) -> None:
  parser.add_argument("--presets", default="demo,300m", help="model presets, comma-separated")
  parser.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (minimum)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype of both implementations")
  parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face reference")
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                      help="where the Hugging Face side runs (JAX uses its default backend)")
  parser.add_argument("--threads", type=int, default=0,
                      help="torch.set_num_threads(N); with 1, XLA's matmuls also run single-threaded "
                           "(--xla_cpu_multi_thread_eigen=false). 0 = both libraries' defaults. On a machine shared "
                           "with other jobs use 1: torch's OpenMP threads spin-wait when the cores are "
                           "oversubscribed, and ran 50-100x slower here with 2 threads")


def _min_time(fn, repeats: int, setup=None) -> float:
  best = float("inf")
  for _ in range(repeats):
    arg = setup() if setup else None
    t0 = time.perf_counter()
    fn(arg)
    best = min(best, time.perf_counter() - t0)
  return best


def bench_ours(config: LlamaConfig, prompts: np.ndarray, new: int, repeats: int) -> dict:
  model = Llama(config)
  variables = jax.jit(model.init_variables)(jax.random.key(0))
  b, t = prompts.shape
  tokens, lengths = jnp.asarray(prompts), jnp.full((b,), t, jnp.int32)
  prefill_fn = jax.jit(functools.partial(prefill, model, cache_size=t + new))
  decode_fn = jax.jit(functools.partial(decode, model, opts=DecodeOptions(max_new_tokens=new)))
  knobs, rng, handler = sampling_knobs(SamplingConfig()), jax.random.key(0), jnp.int32(0)
  t0 = time.perf_counter()
  logits, cache = jax.block_until_ready(prefill_fn(variables, tokens, lengths))
  t1 = time.perf_counter()
  out, count, _ = jax.block_until_ready(decode_fn(variables, logits, cache, lengths, None, rng, knobs, handler))
  t2 = time.perf_counter()
  assert (np.asarray(count) == new).all()
  prefill_s = _min_time(lambda _: jax.block_until_ready(prefill_fn(variables, tokens, lengths)), repeats)
  decode_s = _min_time(lambda _: jax.block_until_ready(
      decode_fn(variables, logits, cache, lengths, None, rng, knobs, handler)), repeats)
  return {"prefill_s": prefill_s, "decode_s": decode_s, "compile_s": (t1 - t0) + (t2 - t1)}


def bench_hf(config: LlamaConfig, prompts: np.ndarray, new: int, repeats: int, dtype: str, device: str = "cpu") -> dict:
  import torch
  import transformers

  torch.manual_seed(0)
  dev = "cuda" if device == "gpu" else "cpu"
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_hf(dtype=dtype))).eval()
  model = model.to(device=dev, dtype=getattr(torch, dtype))
  model.generation_config.eos_token_id = None
  ids = torch.tensor(prompts, dtype=torch.long, device=dev)
  mask = torch.ones_like(ids)
  with torch.inference_mode():
    def prefill_once(_):
      out = model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
      sync()
      return out

    def decode_once(cache):
      out = model.generate(ids, attention_mask=mask, past_key_values=cache, do_sample=False, max_new_tokens=new,
                           min_new_tokens=new, pad_token_id=0)
      sync()
      assert out.shape[1] == ids.shape[1] + new

    base = model(ids[:, :-1], use_cache=True).past_key_values
    prefill_once(None)
    decode_once(copy.deepcopy(base))  # warm-up
    prefill_s = _min_time(prefill_once, repeats)
    decode_s = _min_time(decode_once, repeats, setup=lambda: copy.deepcopy(base))
  return {"prefill_s": prefill_s, "decode_s": decode_s}


def run(args) -> list[dict]:
  if args.new_tokens < 2:
    raise SystemExit("--new-tokens must be >= 2")
  if args.threads:
    # Read when the XLA backend starts (first JAX operation, not the import), so this is still in time.
    if jax._src.xla_bridge.backends_are_initialized():
      raise SystemExit("--threads: the JAX backend already started; set XLA_FLAGS yourself")
    if args.threads == 1:
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    if not args.no_hf:
      import torch

      torch.set_num_threads(args.threads)
  rows = []
  for preset in args.presets.split(","):
    config = LlamaConfig.preset(preset, dtype=args.dtype, param_dtype="float32")
    if args.prompt_len + args.new_tokens > config.max_seq_len:
      config = config.replace(max_seq_len=args.prompt_len + args.new_tokens)
    for batch in (int(b) for b in args.batches.split(",")):
      prompts = np.random.default_rng(0).integers(4, config.vocab_size, (batch, args.prompt_len)).astype(np.int32)
      ours = bench_ours(config, prompts, args.new_tokens, args.repeats)
      row = {"preset": preset, "params_M": config.num_params() / 1e6, "batch": batch, "prompt_len": args.prompt_len,
             "new_tokens": args.new_tokens, "dtype": args.dtype, "threads": args.threads or "default",
             "jax_prefill_tok_s": batch * args.prompt_len / ours["prefill_s"],
             "jax_decode_tok_s": batch * args.new_tokens / ours["decode_s"], "jax_compile_s": ours["compile_s"]}
      if not args.no_hf:
        hf = bench_hf(config, prompts, args.new_tokens, args.repeats, args.dtype, args.device)
        row.update({"hf_prefill_tok_s": batch * args.prompt_len / hf["prefill_s"],
                    "hf_decode_tok_s": batch * args.new_tokens / hf["decode_s"]})
        row["prefill_ratio"] = row["jax_prefill_tok_s"] / row["hf_prefill_tok_s"]
        row["decode_ratio"] = row["jax_decode_tok_s"] / row["hf_decode_tok_s"]
      print(row, flush=True)
      rows.append(row)
  return rows
