"""Peak memory of the server's model loading with 1 and with 3 LoRA adapters over one base.

    PYTHONPATH=. python scripts/bench_adapter_memory.py --dir /tmp/adapters          # make, then measure
    PYTHONPATH=. python scripts/bench_adapter_memory.py --dir /tmp/adapters --layers 24   # the full 300m preset

Makes (once) a random base of the `300m` preset (`--layers` of them, float32 weights) with a sentencepiece
tokenizer, and 3 random rank-16 adapters on every projection; then runs `serve.__main__.load_models` in a fresh
process per case and reports its peak resident memory (ru_maxrss). Serving N adapters over one base should
cost one base plus N small adapters, not N + 1 bases.

Measured (12 layers: 201M parameters, 766 MiB float32; peak RSS of load_models):
              1 adapter   3 adapters
  before      2,900 MiB   5,495 MiB   (commit e1aeb51: every adapter loads and merges its own copy of the base)
  after       2,447 MiB   2,350 MiB   (one base; no adapter: 2,100 MiB)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

PROSE = pathlib.Path(__file__).resolve().parents[1] / "telugu_jax" / "assets" / "demo" / "prose.txt"
MEASURE = """
import json, resource, sys
from telugu_jax.serve.__main__ import load_models
models = load_models(sys.argv[1], [(f"a{i}", d) for i, d in enumerate(sys.argv[2:])], name="base")
print(json.dumps({"models": list(models), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make(out: pathlib.Path, layers: int) -> None:
  import jax
  import numpy as np

  from telugu_jax.model.config import LlamaConfig
  from telugu_jax.model.io import save_model
  from telugu_jax.model.llama import Llama
  from telugu_jax.model.lora import LoraConfig
  from telugu_jax.tokenizer import train_sentencepiece

  tok = train_sentencepiece(PROSE.read_text(encoding="utf-8").splitlines(), vocab_size=800)
  config = LlamaConfig.llama_300m(n_layers=layers, dtype="float32")
  rng = np.random.default_rng(0)

  def draw(shapes, std):
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    return jax.tree_util.tree_unflatten(tree, [rng.normal(0, std, x.shape).astype(np.float32) for x in leaves])

  params = draw(jax.eval_shape(Llama(config).init_variables, jax.random.key(0))["params"], 0.02)
  save_model(out / "base", config, params=params, tokenizer=tok, overwrite=True)
  lora_config = LoraConfig(rank=16)
  shapes = jax.eval_shape(Llama(config, lora=lora_config).init_variables, jax.random.key(0))["lora"]
  for i in range(3):
    save_model(out / f"adapter{i}", config, lora=draw(shapes, 0.02), lora_config=lora_config, base=str(out / "base"),
               overwrite=True)
  print(f"made {config.num_params() / 1e6:.0f}M-parameter base ({config.num_params() * 4 / 2**20:.0f} MiB float32) "
        f"and 3 rank-16 adapters in {out}")


def measure(out: pathlib.Path, n_adapters: int) -> dict:
  args = [sys.executable, "-c", MEASURE, str(out / "base"), *(str(out / f"adapter{i}") for i in range(n_adapters))]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", required=True, help="where the base and adapters are made (reused when present)")
  p.add_argument("--layers", type=int, default=12)
  args = p.parse_args()
  out = pathlib.Path(args.dir)
  if not (out / "adapter2").exists():
    make(out, args.layers)
  for n in (0, 1, 3):
    r = measure(out, n)
    print(f"  {n} adapter(s): peak RSS {r['peak_rss_mib']:7.0f} MiB  ({', '.join(r['models'])})")


if __name__ == "__main__":
  main()
