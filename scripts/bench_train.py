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
The JAX side is what `python -m telugu_jax.train` runs by default: the step, optimiser and LoRA settings of
configs/lora.py / configs/full.py (`train.core.init_state`, `make_steps`, `jit_steps`), and on a CPU the
trainer's CPU recipe (`telugu_jax.train.cpu`: one XLA device per core with the batch split across them
when it fits, XLA:CPU's YNNPACK element-wise fusion, causal attention in query blocks). `--cpu-recipe off`
measures XLA out of the box instead (one device, no flags, attention in one pass). The PyTorch side takes
the same LoRA rank, alpha, dropout and targets.
GPU knobs (JAX side): `--attention cudnn|xla` (default: the trainer's auto), `--remat`, `--loss-chunk N`.
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
  p.add_argument("--lora-dropout", type=float, default=-1.0, help="LoRA dropout, both sides (-1: configs/lora.py's)")
  p.add_argument("--segments", type=int, default=1, help="packed examples per row (JAX side)")
  p.add_argument("--attention", default="auto", choices=["auto", "xla", "cudnn"])
  p.add_argument("--loss-chunk", type=int, default=0, help="tokens per output-projection/loss chunk (0: off)")
  p.add_argument("--attention-block", type=int, default=-1,
                 help="XLA attention query block (-1: the trainer's auto, 0: one pass)")
  p.add_argument("--cpu-recipe", default="auto", choices=["auto", "off"],
                 help="auto: the trainer's CPU settings (telugu_jax.train.cpu); off: XLA out of the box")
  p.add_argument("--cpu-devices", type=int, default=0, help="XLA CPU devices (0: the recipe's choice)")
  p.add_argument("--mesh", default="", help="mesh shape for the JAX worker, e.g. -1,1,1 (default: the recipe's)")
  p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the JAX worker")
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


def _dtype(args) -> str:
  return args.dtype or ("bfloat16" if args.device == "gpu" else "float32")


def _model_config(args):
  from telugu_jax.model import LlamaConfig

  return LlamaConfig.preset(args.config, dtype=_dtype(args), max_seq_len=max(args.seq, 256))


def _run_settings(args, mode):
  """The trainer's settings for this benchmark: configs/lora.py or configs/full.py with the sizes asked for."""
  from telugu_jax.config import load_config
  from telugu_jax.train.settings import RunSettings

  dtype = _dtype(args)
  over = [f"--config.data.batch_size={args.batch}", f"--config.data.max_seq_len={args.seq}",
          f"--config.train.dtype={dtype}", f"--config.train.remat={args.remat}",
          f"--config.train.loss_chunk={args.loss_chunk}", f"--config.train.attention={args.attention}",
          f"--config.train.attention_block={args.attention_block}", f"--config.model.preset={args.config}"]
  if mode == "full" or args.device == "cpu":
    over.append(f"--config.train.frozen_dtype={'float32' if dtype == 'float32' else 'bfloat16'}")
  if args.mesh:
    over.append(f"--config.mesh.shape=({args.mesh})")
  if args.lora_dropout >= 0:
    over.append(f"--config.lora.dropout={args.lora_dropout}")
  return RunSettings.from_config(load_config(mode, over))


def worker_jax(args, mode):
  import jax
  import numpy as np

  from telugu_jax.model import Llama, LlamaConfig
  from telugu_jax.train import init_state, jit_steps, make_optimizer, make_run_mesh, make_steps
  from telugu_jax.train.core import with_train_settings
  from telugu_jax.train.metrics import flops_per_token, peak_flops
  from telugu_jax.train.sharding import shard_batch

  run = _run_settings(args, mode)
  cfg = with_train_settings(LlamaConfig.preset(args.config), run)
  model = Llama(cfg, lora=run.lora)
  mesh = make_run_mesh(run.mesh)
  tx, schedule = make_optimizer(run.optim, 1000)
  state, shardings = init_state(model, None, tx, mesh, mode=run.mode, frozen_dtype=run.train.frozen_dtype)
  train_step, eval_step = make_steps(model, tx, accum=run.train.grad_accum, z_loss=run.train.z_loss,
                                     schedule=schedule, loss_chunk=run.train.loss_chunk)
  step, _, _ = jit_steps(train_step, eval_step, shardings, mesh)
  rows = _batch(cfg.vocab_size, args.batch, args.seq, segments=args.segments)
  batch = shard_batch(rows, mesh)
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
         "loss_tokens_per_s": float(np.sum(rows["loss_mask"])) / sec,
         "params_M": cfg.num_params() / 1e6, "devices": len(mesh.devices.flat), "mesh": list(mesh.devices.shape),
         "attention_block": cfg.attention_block, "attention_kernel": cfg.attention,
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
  lora = _run_settings(args, "lora").lora
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  device = "cuda" if args.device == "gpu" else "cpu"
  dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf())).to(device)
  if mode == "lora":
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.targets),
                                                 lora_dropout=lora.dropout, use_rslora=lora.rslora))
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
            "attention", "loss_chunk", "attention_block", "mesh", "lora_dropout"):
    v = getattr(args, k)
    if v not in ("", None):
      argv.append(f"--{k.replace('_', '-')}={v}")
  if args.remat:
    argv.append("--remat")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # not the test suite's fake devices: only what is asked for below
  if args.device == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  flags = args.xla_flags.split()
  if worker == "jax" and args.cpu_devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={args.cpu_devices}")
  if worker == "jax":
    env["XLA_FLAGS"] = " ".join(flags)
  proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
  if proc.returncode:
    raise RuntimeError(f"{worker} {mode} worker failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> list[dict]:
  from telugu_jax.train import cpu

  if args.profile:
    args.profile = os.path.abspath(args.profile)  # the workers run in the repository root
  modes = ["lora", "full"] if args.mode == "both" else [args.mode]
  rows = []
  base_flags, base_devices, base_mesh = args.xla_flags, args.cpu_devices, args.mesh
  for mode in modes:
    args.xla_flags, args.cpu_devices, args.mesh = base_flags, base_devices, base_mesh
    recipe = ""
    if args.device == "cpu" and args.cpu_recipe == "auto":
      plan = cpu.plan_for(_run_settings(args, mode))   # what the trainer would choose for this run
      recipe = plan.why
      args.cpu_devices = args.cpu_devices or plan.devices
      args.xla_flags = " ".join([*plan.flags, args.xla_flags]).strip()
      if plan.mesh_shape and not args.mesh:
        args.mesh = ",".join(map(str, plan.mesh_shape))
    elif args.device == "cpu":   # XLA out of the box: one device, attention in one pass
      recipe = "off"
      args.cpu_devices = args.cpu_devices or 1
      args.mesh = args.mesh or "1,-1,1"
      if args.attention_block < 0:
        args.attention_block = 0
    if args.cpu_devices > 1 and args.batch % args.cpu_devices:
      raise SystemExit(f"--batch {args.batch} must split evenly over --cpu-devices {args.cpu_devices}")
    common = {"config": args.config, "batch": args.batch, "seq": args.seq}
    knobs = {"lora_dropout": _run_settings(args, "lora").lora.dropout if mode == "lora" else None,
             "segments": args.segments, "remat": args.remat, "loss_chunk": args.loss_chunk, "cpu_recipe": recipe,
             "cpu_devices": args.cpu_devices, "xla_flags": args.xla_flags}
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
