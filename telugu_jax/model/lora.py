"""LoRA: low-rank adapters that live in their own `lora` variable collection.

A LoRA projection computes `x @ W + dropout(x) @ A @ B * scale`, with `W` in `params` (frozen during
LoRA training) and `A: [in, r]`, `B: [r, out]` in `lora`. B starts at zero, so a fresh adapter leaves
the base model's output unchanged. Keeping the adapter in its own collection is what lets training
differentiate only `{"lora": ...}` while the base stays a frozen (possibly bf16) pytree.

`scale` is `alpha / r`, or `alpha / sqrt(r)` with rsLoRA, as in PEFT. The layout differs from PEFT's
only by a transpose: PEFT stores `lora_A.weight: [r, in]` and `lora_B.weight: [out, r]`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 16
  alpha: float = 32.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ALL_TARGETS
  rslora: bool = False

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    bad = set(self.targets) - set(ALL_TARGETS)
    if bad:
      raise ValueError(f"unknown LoRA targets {sorted(bad)}; choose from {list(ALL_TARGETS)}")
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")

  @property
  def scale(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


def _lora_a_init(key, shape, dtype=jnp.float32):
  # PEFT initialises A with kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); same here so
  # learning rates tuned for PEFT carry over.
  bound = 1.0 / math.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class LoraDense(nn.Module):
  """A bias-free Dense (`kernel: [in, out]` in `params`) with an optional LoRA adapter.

  Attributes:
    features: output size.
    lora: the adapter config, or None when this projection is not a LoRA target.
    lora_enabled: False computes the base projection only, while the adapter's variables stay
      declared (Linen raises on a missing collection; "off" must be a flag, not an absence).
    deterministic: disables LoRA dropout.
  """

  features: int
  lora: LoraConfig | None = None
  lora_enabled: bool = True
  deterministic: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d_in = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.normal(0.02), (d_in, self.features), self.param_dtype)
    x = x.astype(self.dtype)
    y = jnp.dot(x, kernel.astype(self.dtype))
    if self.lora is None:
      return y
    # Adapter weights are trainable master copies: always float32, whatever the base's dtype.
    a = self.variable("lora", "lora_a", lambda: _lora_a_init(self.make_rng("params"), (d_in, self.lora.rank)))
    b = self.variable("lora", "lora_b", lambda: jnp.zeros((self.lora.rank, self.features), jnp.float32))
    if not self.lora_enabled:
      return y
    h = nn.Dropout(self.lora.dropout)(x, deterministic=self.deterministic or self.lora.dropout == 0.0)
    # The scale multiplies B ([r, out]) rather than the [.., out] product: one element-wise pass over the
    # activations fewer per projection, forward and backward.
    b_scaled = (b.value * self.lora.scale).astype(self.dtype)
    return y + jnp.dot(jnp.dot(h, a.value.astype(self.dtype)), b_scaled)


def init_lora(abstract_lora: Mapping, rng: jax.Array) -> dict:
  """A fresh adapter for the `lora` collection whose shapes `abstract_lora` gives (from `jax.eval_shape` of the
  model's init): A as PEFT draws it, B = 0, so the adapted model starts equal to the base.

  Why not `model.init_variables(rng)["lora"]`: that traces and compiles a forward pass of the whole model
  and draws every base weight, only to keep the adapter (8 s of compilation on a CPU for the 300M model,
  more on a GPU with autotuning). The values differ from that path's (another random stream), the
  distribution does not.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_lora)
  keys = jax.random.split(rng, len(leaves))
  out = []
  for (path, leaf), key in zip(leaves, keys, strict=True):
    name = getattr(path[-1], "key", str(path[-1]))
    if name == "lora_a":
      out.append(_lora_a_init(key, leaf.shape))
    elif name == "lora_b":
      out.append(jnp.zeros(leaf.shape, jnp.float32))
    else:
      raise ValueError(f"unexpected variable {jax.tree_util.keystr(path)} in the lora collection")
  return jax.tree_util.tree_unflatten(treedef, out)


# ---- pytree helpers ------------------------------------------------------------------------------

def count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def split_variables(variables: Mapping, mode: str) -> tuple[dict, dict]:
  """Split model variables into (trainable, frozen) for `loss_fn(trainable, frozen, ...)`.

  mode "lora": trainable = {"lora": ...}, frozen = {"params": ...}.
  mode "full": trainable = {"params": ...}, frozen = {} (any adapter is dropped; merge it first).
  """
  if mode == "lora":
    if "lora" not in variables:
      raise ValueError("mode='lora' but the model has no 'lora' collection: build it with a LoraConfig")
    return {"lora": variables["lora"]}, {"params": variables["params"]}
  if mode == "full":
    return {"params": variables["params"]}, {}
  raise ValueError(f"unknown fine-tuning mode {mode!r}; use 'lora' or 'full'")


def join_variables(trainable: Mapping, frozen: Mapping) -> dict:
  return {**frozen, **trainable}


def _adapters(lora: Mapping, prefix: tuple = ()):
  """Yields (path, lora_a, lora_b) for every adapted projection in a `lora` collection."""
  for k, v in lora.items():
    if isinstance(v, Mapping) and "lora_a" in v:
      yield prefix + (k,), v["lora_a"], v["lora_b"]
    elif isinstance(v, Mapping):
      yield from _adapters(v, prefix + (k,))


def _get(tree: Mapping, path: tuple):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: Mapping, path: tuple, value) -> dict:
  """Functional update of a nested dict (copies only along `path`)."""
  out = dict(tree)
  if len(path) == 1:
    out[path[0]] = value
  else:
    out[path[0]] = _set(tree[path[0]], path[1:], value)
  return out


def lora_delta(a: jax.Array, b: jax.Array, cfg: LoraConfig) -> jax.Array:
  """The weight update `A @ B * scale`, [in, out] float32."""
  return jnp.dot(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)) * cfg.scale


def merge_lora(params: Mapping, lora: Mapping, cfg: LoraConfig, *, warn_tol: float = 0.1) -> dict:
  """`W + A @ B * scale` for every adapted kernel; returns params with the same dtypes.

  The sum is formed in float32 and cast back to the kernel's dtype. In bf16 (8 bits of mantissa) a
  small update can round away entirely; when the merged-minus-base difference misses the true update
  by more than `warn_tol` (relative, Frobenius), a warning names the layer and the loss, so a user
  knows to merge into a float32 copy instead.
  """
  out = dict(params)
  worst = (0.0, None)
  for path, a, b in _adapters(lora):
    kernel = _get(out, path + ("kernel",))
    delta = lora_delta(a, b, cfg)
    merged = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    if kernel.dtype != jnp.float32:
      achieved = jnp.asarray(merged, jnp.float32) - jnp.asarray(kernel, jnp.float32)
      denom = float(jnp.linalg.norm(delta))
      if denom > 0:
        err = float(jnp.linalg.norm(achieved - delta)) / denom
        if err > worst[0]:
          worst = (err, "/".join(path))
    out = _set(out, path + ("kernel",), merged)
  if worst[0] > warn_tol:
    warnings.warn(
        f"merging LoRA into {jnp.dtype(kernel.dtype).name} weights lost {worst[0]:.0%} of the update at "
        f"{worst[1]} (relative error); merge into float32 weights to keep it", stacklevel=2)
  return out


def drop_lora(variables: Mapping) -> dict:
  return {k: v for k, v in variables.items() if k != "lora"}
