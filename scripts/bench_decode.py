"""Decode benchmark (suite `decode`): prefill and decode tokens/s of `telugu_jax.generate`, beside Hugging Face
`generate` on the same machine in the same run.

    python scripts/benchmark.py --suite decode                                   # demo and 300m, batch 1 and 32
    python scripts/benchmark.py --suite decode --presets demo --batches 1,8 --new-tokens 64 --no-hf

Random weights, random prompts of `--prompt-len` tokens (equal lengths, so HF needs no padding), greedy, no
eos, so every row makes exactly `--new-tokens` tokens. Each side is timed twice per configuration, with 1 and
with N new tokens (median of `--repeats` runs after a warm-up): a decode step costs (t_N - t_1) / (N - 1) and
the prefill t_1 minus one step. Tokens/s count all rows: prefill B*T / prefill time, decode B / step time.
Ours runs without stop strings or streaming (the loop never leaves the device); the JAX compile time of the
N-token program is reported apart. Float32 on both sides by default (bf16 matmuls are slow on most CPUs).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from telugu_jax.generate import Generator, SamplingConfig
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.llama import Llama


def add_args(parser) -> None:
  parser.add_argument("--presets", default="demo,300m", help="model presets, comma-separated")
  parser.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (median)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype of both implementations")
  parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face reference")


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _split(t1: float, tn: float, n: int) -> tuple[float, float]:
  """(prefill seconds, seconds per decode step) from the times of 1 and n new tokens."""
  step = max(tn - t1, 1e-9) / (n - 1)
  return max(t1 - step, 1e-9), step


def bench_ours(config: LlamaConfig, batch: int, prompts: np.ndarray, new: int, repeats: int) -> dict:
  variables = jax.jit(Llama(config).init_variables)(jax.random.key(0))
  gen = Generator(config, variables, prompt_bucket=prompts.shape[1])
  rows = prompts.tolist()

  def run(n):
    out = gen.generate(rows, SamplingConfig(max_new_tokens=n), eos_id=None)
    assert all(len(o.ids) == n for o in out)

  t0 = time.perf_counter()
  run(new)
  compile_s = time.perf_counter() - t0
  run(1)
  prefill_s, step_s = _split(_median_time(lambda: run(1), repeats), _median_time(lambda: run(new), repeats), new)
  return {"compile_s": compile_s, "prefill_s": prefill_s, "step_s": step_s}


def bench_hf(config: LlamaConfig, batch: int, prompts: np.ndarray, new: int, repeats: int, dtype: str) -> dict:
  import torch
  import transformers

  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(**config.to_hf(dtype=dtype))
  model = transformers.LlamaForCausalLM(hf_cfg).eval().to(getattr(torch, dtype))
  model.generation_config.eos_token_id = None
  ids = torch.tensor(prompts)

  def run(n):
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                           min_new_tokens=n, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + n

  run(new)  # warm-up
  prefill_s, step_s = _split(_median_time(lambda: run(1), repeats), _median_time(lambda: run(new), repeats), new)
  return {"prefill_s": prefill_s, "step_s": step_s, "threads": torch.get_num_threads()}


def run(args) -> list[dict]:
  if args.new_tokens < 2:
    raise SystemExit("--new-tokens must be >= 2 (decode speed is measured between 1 and N new tokens)")
  rows = []
  for preset in args.presets.split(","):
    config = LlamaConfig.preset(preset, dtype=args.dtype, param_dtype="float32")
    if args.prompt_len + args.new_tokens > config.max_seq_len:
      config = config.replace(max_seq_len=args.prompt_len + args.new_tokens)
    for batch in (int(b) for b in args.batches.split(",")):
      prompts = np.random.default_rng(0).integers(4, config.vocab_size, (batch, args.prompt_len)).astype(np.int32)
      ours = bench_ours(config, batch, prompts, args.new_tokens, args.repeats)
      row = {"preset": preset, "params_M": config.num_params() / 1e6, "batch": batch, "prompt_len": args.prompt_len,
             "new_tokens": args.new_tokens, "dtype": args.dtype,
             "jax_prefill_tok_s": batch * args.prompt_len / ours["prefill_s"],
             "jax_decode_tok_s": batch / ours["step_s"], "jax_compile_s": ours["compile_s"]}
      if not args.no_hf:
        hf = bench_hf(config, batch, prompts, args.new_tokens, args.repeats, args.dtype)
        row.update({"hf_prefill_tok_s": batch * args.prompt_len / hf["prefill_s"],
                    "hf_decode_tok_s": batch / hf["step_s"], "torch_threads": hf["threads"]})
        row["prefill_ratio"] = row["jax_prefill_tok_s"] / row["hf_prefill_tok_s"]
        row["decode_ratio"] = row["jax_decode_tok_s"] / row["hf_decode_tok_s"]
      print(row, flush=True)
      rows.append(row)
  return rows
