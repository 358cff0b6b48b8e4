"""GPU-only correctness checks for the fast paths CI (CPU) cannot run: `python scripts/check_gpu.py`.

1. cuDNN flash attention (`attention="cudnn"`) against the XLA path, same bf16 weights, packed rows:
   logits and the gradient of the SFT loss, as relative errors ||a - b|| / ||b||, each also against a
   float32 XLA reference (bf16 noise is the yardstick: cuDNN must be no further from fp32 than XLA-bf16 is).
2. Packing under cuDNN: each packed example's logits equal the example run alone.
3. The chunked loss (`loss_chunk`) equals the full-logits loss on the GPU.
Exits non-zero when a check fails.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from telugu_jax.model import Llama, LlamaConfig  # noqa: E402
from telugu_jax.train.loss import loss_sums  # noqa: E402


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main() -> int:
  print("devices:", jax.devices())
  base = LlamaConfig.preset("300m", n_layers=2, vocab_size=4096, max_seq_len=512)
  cfgs = {"fp32": base.replace(dtype="float32"), "xla": base.replace(dtype="bfloat16"),
          "cudnn": base.replace(dtype="bfloat16", attention="cudnn")}
  variables = Llama(cfgs["fp32"]).init_variables(jax.random.key(0))
  rng = np.random.default_rng(1)
  b, t = 4, 512
  tokens = rng.integers(3, base.vocab_size, (b, t)).astype(np.int32)
  cuts = [100, 230, 400]                              # 4 examples per row, the last one padded at the end
  seg = np.zeros((b, t), np.int32)
  bounds = [0, *cuts, t - 37]
  for i in range(len(bounds) - 1):
    seg[:, bounds[i]:bounds[i + 1]] = i + 1
  batch = {"inputs": tokens, "targets": np.roll(tokens, -1, 1), "segment_ids": seg,
           "loss_mask": (seg > 0).astype(np.int32)}
  from telugu_jax.model.llama import positions_from_segments

  batch["positions"] = np.asarray(positions_from_segments(jnp.asarray(seg)))
  failures = []

  def logits(name):
    m = Llama(cfgs[name])
    return jax.jit(lambda v: m.apply(v, batch["inputs"], positions=batch["positions"],
                                     segment_ids=batch["segment_ids"]))(variables)

  def grads(name, chunk=0):
    m = Llama(cfgs[name])
    f = lambda p: loss_sums(m, {"params": p}, {}, batch, None, loss_chunk=chunk)[0]  # noqa: E731
    return jax.jit(jax.value_and_grad(f))(variables["params"])

  real = seg > 0
  ref, x, c = (np.asarray(logits(n))[real] for n in ("fp32", "xla", "cudnn"))
  e_xc, e_xr, e_cr = rel(c, x), rel(x, ref), rel(c, ref)
  print(f"logits  cudnn vs xla-bf16 {e_xc:.2e} | xla-bf16 vs fp32 {e_xr:.2e} | cudnn vs fp32 {e_cr:.2e}")
  if not (e_xc < 2e-2 and e_cr < 2 * e_xr + 1e-3):
    failures.append("cudnn logits")

  (l_ref, g_ref), (l_x, g_x), (l_c, g_c) = (grads(n) for n in ("fp32", "xla", "cudnn"))
  flat = lambda g: np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(g)])  # noqa
  ge_xc, ge_xr, ge_cr = rel(flat(g_c), flat(g_x)), rel(flat(g_x), flat(g_ref)), rel(flat(g_c), flat(g_ref))
  print(f"loss    fp32 {float(l_ref):.4f} xla-bf16 {float(l_x):.4f} cudnn {float(l_c):.4f}")
  print(f"grads   cudnn vs xla-bf16 {ge_xc:.2e} | xla-bf16 vs fp32 {ge_xr:.2e} | cudnn vs fp32 {ge_cr:.2e}")
  if not (ge_xc < 5e-2 and ge_cr < 2 * ge_xr + 1e-3):
    failures.append("cudnn grads")

  # Packing: example 2 of row 0, run alone, equals its packed logits.
  m = Llama(cfgs["cudnn"])
  lo, hi = bounds[1], bounds[2]
  alone = jax.jit(lambda v, ids: m.apply(v, ids))(variables, tokens[:1, lo:hi])
  packed = np.asarray(logits("cudnn"))[0, lo:hi]
  e_pack = rel(packed, np.asarray(alone)[0])
  print(f"packed  cudnn example alone vs packed {e_pack:.2e}")
  if e_pack > 1e-2:
    failures.append("cudnn packing")

  l_chunk, g_chunk = grads("xla", chunk=1000)
  e_chunk = rel(flat(g_chunk), flat(g_x))
  print(f"chunked loss {float(l_chunk):.5f} vs {float(l_x):.5f}; grads rel {e_chunk:.2e}")
  if abs(float(l_chunk) - float(l_x)) > 1e-3 * abs(float(l_x)) or e_chunk > 1e-2:
    failures.append("chunked loss")

  print("FAILED: " + ", ".join(failures) if failures else "all GPU checks passed")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
