"""Suite `train`: one SFT optimiser step (LoRA and full), JAX vs PyTorch + PEFT, same sizes, same optimiser.

    python scripts/benchmark.py --suite train --config demo --compare torch
    python scripts/benchmark.py --suite train --config 300m --mode full --batch 8 --seq 1024 --device gpu

Each side runs in its own subprocess, so its peak resident memory (CPU) is its own. Timing: `--warmup`
steps excluded (compilation), then the median of `--steps` step times, each ended by a blocking read.
Both sides: random weights of the named preset, rows of `--seq` tokens with a causal mask and loss on
the second half of each row (like an answer after a prompt), AdamW (lr 1e-4, wd 0.01), fp32 on CPU.
`--segments N` packs N examples per row (segment ids, restarting positions, loss on the second half of
each): the JAX side then attends only within each example. The PyTorch side always runs plain causal rows
of the same length (HF's SDPA path has no segment masking), which is less work, never more.
tokens/s counts every input token; MFU = tokens/s x FLOPs/token (telugu_jax.train.metrics) / peak.
GPU knobs (JAX side): `--attention cudnn` (fused flash attention), `--remat`, `--loss-chunk N`.
CPU knobs (JAX side): `--cpu-tuned` = `--cpu-devices <cores> --attention-block 32 --xla-flags "<CPU_FLAGS>"`:
one XLA CPU device per core with the batch split across them (data parallel; each device runs its matmuls
on one thread instead of all devices sharing one thread pool), causal attention in 32-token query
blocks, and XLA:CPU's YNNPACK fusion of element-wise ops (see docs/benchmarks.md for what each gave).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_args(p):
  p.add_argument("--config", default="demo", choices=["smoke", "demo", "300m"])
  p.add_argument("--mode", default="both", choices=["lora", "full", "both"])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--compare", default="", choices=["", "torch"])
  p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
  p.add_argument("--dtype", default="", help="compute dtype (default float32 on cpu, bfloat16 on gpu)")
  p.add_argument("--remat", action="store_true")
  p.add_argument("--segments", type=int, default=1, help="packed examples per row (JAX side)")
  p.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
  p.add_argument("--loss-chunk", type=int, default=0, help="tokens per output-projection/loss chunk (0: off)")
  p.add_argument("--attention-block", type=int, default=0, help="XLA attention query block (0: one pass)")
  p.add_argument("--cpu-devices", type=int, default=1, help="XLA CPU devices (data parallel over them)")
  p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the JAX worker")
  p.add_argument("--cpu-tuned", action="store_true", help="the CPU recipe above (JAX side)")
  p.add_argument("--profile", default="", help="write a JAX profiler trace of a few steps here")
  p.add_argument("--peak-tflops", type=float, default=0.0, help="per device, for MFU on hardware not recognised")
  p.add_argument("--worker", default="", help=argparse_hidden())


def argparse_hidden():
  import argparse

  return argparse.SUPPRESS


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch(vocab, b, t, seed=0, segments=1):
  import numpy as np

  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, (b, t + 1)).astype(np.int32)
  n = t // segments                       # examples of n tokens (the last one takes the remainder)
  seg = np.minimum(np.arange(t) // n, segments - 1) + 1
  start = (seg - 1) * n
  pos = np.arange(t) - start
  length = np.where(seg == segments, t - start, n)
  mask = (pos >= length // 2).astype(np.int32)  # loss on the second half of each example
  tile = lambda x: np.broadcast_to(x.astype(np.int32), (b, t)).copy()  # noqa: E731
  return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": tile(mask),
          "segment_ids": tile(seg), "positions": tile(pos)}


def _model_config(args):
  from telugu_jax.model import LlamaConfig

  dtype = args.dtype or ("bfloat16" if args.device == "gpu" else "float32")
  return LlamaConfig.preset(args.config, dtype=dtype, remat=args.remat, max_seq_len=max(args.seq, 256),
                            attention=args.attention, attention_block=args.attention_block)


def worker_jax(args, mode):
  import functools

  import jax
  import ml_collections
  import numpy as np

  from telugu_jax.model import Llama, LoraConfig
  from telugu_jax.model.lora import split_variables
  from telugu_jax.train.metrics import flops_per_token, peak_flops
  from telugu_jax.train.optim import make_optimizer
  from telugu_jax.train.step import create_state, sft_objective, train_step

  cfg = _model_config(args)
  lcfg = LoraConfig(rank=16, alpha=32.0, targets=LORA_TARGETS) if mode == "lora" else None
  model = Llama(cfg, lora=lcfg)
  variables = jax.jit(model.init_variables)(jax.random.PRNGKey(0))
  trainable, frozen = split_variables(variables, mode)
  if mode == "lora" and cfg.dtype == "bfloat16":
    frozen = jax.tree_util.tree_map(lambda x: x.astype(jax.numpy.bfloat16), frozen)
  optim = ml_collections.ConfigDict(dict(name="adamw", lr=1e-4, warmup_steps=0, end_lr_ratio=1.0, weight_decay=0.01,
                                         b1=0.9, b2=0.999, eps=1e-8, clip_norm=1.0, decay_embeddings=False))
  tx, _ = make_optimizer(optim, 1000)
  state = create_state(trainable, frozen, tx, jax.random.PRNGKey(1))
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step = jax.jit(functools.partial(train_step, model=model, tx=tx,
                                   objective=sft_objective(model, loss_chunk=args.loss_chunk)), donate_argnums=(0,))
  batch = jax.device_put(_batch(cfg.vocab_size, args.batch, args.seq, segments=args.segments),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  t0 = time.perf_counter()
  state, m = step(state, batch)
  float(m["loss"])
  first_step_s = time.perf_counter() - t0  # compilation + one step
  for _ in range(args.warmup - 1):
    state, m = step(state, batch)
  float(m["loss"])
  times = []
  if args.profile:  # + a Perfetto JSON trace that scripts/profile_summary.py reads without TensorBoard
    os.makedirs(args.profile, exist_ok=True)
    jax.profiler.start_trace(args.profile, create_perfetto_trace=True)
    with open(os.path.join(args.profile, "steps.txt"), "w") as f:
      f.write(str(args.steps))
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step(state, batch)
    float(m["loss"])  # blocks until the step is done
    times.append(time.perf_counter() - t0)
  if args.profile:
    jax.profiler.stop_trace()
  sec = statistics.median(times)
  tokens = args.batch * args.seq
  out = {"framework": "jax", "mode": mode, "step_s": sec, "first_step_s": first_step_s, "tokens_per_s": tokens / sec,
         "loss_tokens_per_s": float(np.sum(batch["loss_mask"])) / sec,
         "params_M": cfg.num_params() / 1e6,
         "trainable_M": sum(x.size for x in jax.tree_util.tree_leaves(state.trainable)) / 1e6}
  peak = peak_flops(args.peak_tflops)
  out["mfu"] = tokens / sec * flops_per_token(cfg, args.seq, mode) / peak if peak else None
  dev = jax.devices()[0]
  if dev.platform == "gpu":
    out["peak_mem_MB"] = dev.memory_stats().get("peak_bytes_in_use", 0) / 2**20
  else:
    out["peak_mem_MB"] = _peak_rss_mb()
  return out


def worker_torch(args, mode):
  import peft
  import torch
  import transformers

  from telugu_jax.train.metrics import flops_per_token

  cfg = _model_config(args)
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  device = "cuda" if args.device == "gpu" else "cpu"
  dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf())).to(device)
  if mode == "lora":
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS),
                                                 lora_dropout=0.0))
  params = [p for p in hf.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
  b = _batch(cfg.vocab_size, args.batch, args.seq)
  ids = torch.tensor(b["inputs"], device=device).long()
  labels = torch.tensor(b["targets"], device=device).long()
  labels[torch.tensor(b["loss_mask"], device=device) == 0] = -100
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)

  def step():
    with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
      logits = hf(input_ids=ids).logits
    loss = loss_fn(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)

  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    step()
    if device == "cuda":
      torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  tokens = args.batch * args.seq
  out = {"framework": "torch+peft" if mode == "lora" else "torch", "mode": mode, "step_s": sec,
         "tokens_per_s": tokens / sec, "loss_tokens_per_s": float(b["loss_mask"].sum()) / sec,
         "params_M": cfg.num_params() / 1e6, "trainable_M": sum(p.numel() for p in params) / 1e6, "mfu": None}
  if device == "cuda":
    out["peak_mem_MB"] = torch.cuda.max_memory_allocated() / 2**20
    out["mfu"] = tokens / sec * flops_per_token(cfg, args.seq, mode) / ((args.peak_tflops or 989) * 1e12)
  else:
    out["peak_mem_MB"] = _peak_rss_mb()
  return out


def _spawn(args, worker: str, mode: str) -> dict:
  argv = [sys.executable, os.path.abspath(__file__), "--worker", f"{worker}:{mode}"]
  for k in ("config", "batch", "seq", "steps", "warmup", "device", "dtype", "profile", "peak_tflops", "segments",
            "attention", "loss_chunk", "attention_block"):
    v = getattr(args, k)
    if v not in ("", None):
      argv += [f"--{k.replace('_', '-')}", str(v)]
  if args.remat:
    argv.append("--remat")
  env = dict(os.environ)
  if args.device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # not the test suite's fake devices: only what is asked for below
  flags = args.xla_flags.split()
  if worker == "jax" and args.cpu_devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={args.cpu_devices}")
  if worker == "jax" and flags:
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *flags]).strip()
  proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
  if proc.returncode:
    raise RuntimeError(f"{worker} {mode} worker failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


CPU_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_cpu_experimental_ynn_fusion_type=+eltwise"


def run(args) -> list[dict]:
  if args.cpu_tuned:
    args.cpu_devices = max(args.cpu_devices, os.cpu_count() or 1)
    args.attention_block = args.attention_block or 32
    args.xla_flags = " ".join([args.xla_flags, CPU_FLAGS]).strip()
  if args.profile:
    args.profile = os.path.abspath(args.profile)  # the workers run in the repository root
  if args.batch % args.cpu_devices:
    raise SystemExit(f"--batch {args.batch} must split evenly over --cpu-devices {args.cpu_devices}")
  modes = ["lora", "full"] if args.mode == "both" else [args.mode]
  rows = []
  for mode in modes:
    common = {"config": args.config, "batch": args.batch, "seq": args.seq}
    knobs = {"segments": args.segments, "attention": args.attention, "remat": args.remat, "loss_chunk": args.loss_chunk,
             "attention_block": args.attention_block, "cpu_devices": args.cpu_devices, "xla_flags": args.xla_flags}
    jx = _spawn(args, "jax", mode)
    rows.append({**common, **knobs, **jx})
    if args.compare == "torch":
      th = _spawn(args, "torch", mode)
      rows.append({**common, **th})
      rows[-2]["speedup_vs_torch"] = jx["tokens_per_s"] / th["tokens_per_s"]
  return rows


def _worker_main():
  import argparse

  p = argparse.ArgumentParser()
  add_args(p)
  args = p.parse_args()
  which, mode = args.worker.split(":")
  sys.path.insert(0, REPO)
  out = worker_jax(args, mode) if which == "jax" else worker_torch(args, mode)
  print(json.dumps(out))


if __name__ == "__main__":
  _worker_main()
