"""Benchmark suite `convert`: time and peak resident memory of converting a model, and of exporting it back.

    python scripts/benchmark.py --suite convert [--preset 300m] [--dtypes float32,bfloat16] [--shard-mb 500]

Random Hugging Face safetensors of the preset are written first (shard by shard, std 0.02), then each
step runs in a fresh Python process that reports its own peak RSS (`ru_maxrss`): the baseline after
imports, and the peak during the step. "weights_mb" is one copy of the model in the dtype, the floor a
tensor-by-tensor conversion can approach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# The child reads its peak from /proc/self/status (VmHWM, reset by exec) rather than ru_maxrss, which Linux
# carries over from the forking parent (here: the process that just wrote the random checkpoint).
_CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
step, src, dst = sys.argv[1:4]
if step == "convert":
  from telugu_jax.convert import convert as run
else:
  from telugu_jax.convert import export_hf as run
import jax  # noqa: F401 - counted in the baseline, as in real use

def peak_mb():
  try:
    with open("/proc/self/status") as f:
      return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

baseline = peak_mb()
t = time.perf_counter()
run(src, dst, log=lambda s: None)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "baseline_rss_mb": baseline, "peak_rss_mb": peak_mb()}))
"""


def add_args(parser) -> None:
  parser.add_argument("--preset", default="300m", help="LlamaConfig preset to convert")
  parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated checkpoint dtypes")
  parser.add_argument("--shard-mb", type=int, default=500, help="safetensors shard size of the random checkpoint")
  parser.add_argument("--workdir", help="where to write checkpoints (default: a temporary directory, removed)")
  parser.add_argument("--skip-export", action="store_true", help="measure the conversion only")


def write_random_hf(folder: str, config, dtype: str, shard_bytes: int, seed: int = 0) -> int:
  """A random HF Llama checkpoint of `config` (sharded safetensors + index + config.json); returns its bytes."""
  import torch
  from safetensors.torch import save_file

  from telugu_jax.convert import keymaps
  from telugu_jax.convert.to_orbax import expected_shapes

  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
  shapes = expected_shapes(config)["params"]
  entries = []  # (HF name, torch-layout shape)
  for path, shape in shapes.items():
    flips = keymaps.HF.transform(path).flips
    entries.append((keymaps.HF.source_name(path), tuple(reversed(shape)) if flips else tuple(shape)))
  itemsize = torch.tensor([], dtype=tdtype).element_size()
  groups, current, size = [], [], 0
  for name, shape in entries:
    n = int(np.prod(shape)) * itemsize
    if current and size + n > shard_bytes:
      groups.append(current)
      current, size = [], 0
    current.append((name, shape))
    size += n
  groups.append(current)
  weight_map, total = {}, 0
  for i, group in enumerate(groups):
    file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
    tensors = {}
    for name, shape in group:
      x = rng.standard_normal(shape, dtype=np.float32) * 0.02
      if name.endswith("norm.weight"):
        x += 1.0
      tensors[name] = torch.from_numpy(x).to(tdtype)
      total += tensors[name].numel() * itemsize
    save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(tensors, file))
  with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config.replace(param_dtype=dtype).to_hf(torch_dtype=dtype), f)
  return total


def _child(step: str, src: str, dst: str) -> dict:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = subprocess.run([sys.executable, "-c", _CHILD, step, src, dst], capture_output=True, text=True, env=env)
  if out.returncode:
    raise RuntimeError(f"{step} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> list[dict]:
  from telugu_jax.model.config import LlamaConfig

  config = LlamaConfig.preset(args.preset)
  work = args.workdir or tempfile.mkdtemp(prefix="bench-convert-")
  rows = []
  try:
    for dtype in args.dtypes.split(","):
      src, dst, back = (os.path.join(work, f"{name}-{dtype}") for name in ("hf", "ours", "export"))
      for d in (src, dst, back):
        shutil.rmtree(d, ignore_errors=True)
      nbytes = write_random_hf(src, config, dtype, args.shard_mb * 2**20)
      shards = len([f for f in os.listdir(src) if f.endswith(".safetensors")])
      steps = [("convert", src, dst)] + ([] if args.skip_export else [("export hf", dst, back)])
      for step, a, b in steps:
        r = _child(step.split()[0] if step == "convert" else "export", a, b)
        rows.append({"step": step, "preset": args.preset, "dtype": dtype, "params_m": config.num_params() / 1e6,
                     "shards": shards, "weights_mb": nbytes / 2**20, "seconds": r["seconds"],
                     "baseline_rss_mb": r["baseline_rss_mb"], "peak_rss_mb": r["peak_rss_mb"],
                     "peak_minus_baseline_over_weights": (r["peak_rss_mb"] - r["baseline_rss_mb"]) / (nbytes / 2**20)})
  finally:
    if not args.workdir:
      shutil.rmtree(work, ignore_errors=True)
  return rows
