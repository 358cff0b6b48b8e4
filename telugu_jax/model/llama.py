"""LLaMA in Flax Linen: RMSNorm, RoPE, SwiGLU, grouped-query attention, optional tied embeddings.

Parameter names follow Hugging Face (`q_proj`, `gate_proj`, `input_layernorm`, ...), so the checkpoint
key map is a transpose away from the identity. LoRA adapters (see `lora.py`) live in the `lora`
collection.

Packing: `segment_ids` say which example each token belongs to (0 = padding); a token attends only
to earlier tokens of its own segment, and `positions` restart at every segment, so packed examples
never see each other.

Shape legend: B batch, T query length, S key length, N query heads, K kv heads, H head dim,
D model dim, F mlp dim, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from telugu_jax.model.cache import KVCache
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.lora import LoraConfig, LoraDense

# ---- small pure functions ------------------------------------------------------------------------

def rope_frequencies(config: LlamaConfig) -> jax.Array:
  """Inverse frequencies [H/2] float32, with llama3-style scaling when configured (as HF computes it)."""
  h = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  s = config.rope_scaling
  if s is None:
    return inv_freq
  low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def rope_tables(config: LlamaConfig, positions_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin: [B, T, H] float32, halves repeated (HF's rotate-half convention)."""
  freqs = positions_bt.astype(jnp.float32)[..., None] * rope_frequencies(config)  # [B, T, H/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x_btnh: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  x = x_btnh.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x_btnh.dtype)


def positions_from_segments(segment_ids_bt: jax.Array) -> jax.Array:
  """Positions that restart at 0 wherever the segment id changes along a row."""
  t = segment_ids_bt.shape[1]
  idx = jnp.arange(t)[None, :]
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids_bt[:, :1], bool), segment_ids_bt[:, 1:] != segment_ids_bt[:, :-1]], axis=1)
  first = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return (idx - first).astype(jnp.int32)


def attention_mask(q_seg_bt, k_seg_bs, q_slot_t, k_slot_s) -> jax.Array:
  """[B, 1, T, S] bool: causal by slot, and only within the same segment."""
  causal = k_slot_s[None, :] <= q_slot_t[:, None]                     # [T, S]
  same = q_seg_bt[:, :, None] == k_seg_bs[:, None, :]                 # [B, T, S]
  return (same & causal[None])[:, None]


def blocked_causal_attention(q_btnh, k_btkh, v_btkh, seg_bt, block: int, scale: float) -> jax.Array:
  """Causal attention within segments, for full-sequence passes (no cache), in query blocks of `block`.

  Why not one [T, T] softmax: query block i only needs the keys up to its own end, so the blocks skip
  the upper triangle, about half the score matrix at T = 8 x block; on XLA:CPU, where the element-wise
  softmax work (not the matmuls) dominates attention, a fwd+bwd at [8, 256] x 8 heads ran 2x faster with
  32-token blocks (measured in isolation; the whole step: docs/benchmarks.md). Same maths as
  `jax.nn.dot_product_attention`'s XLA path: float32 logits, masked with a large negative, softmax in
  float32, probabilities in the value dtype.
  """
  b, t, n, h = q_btnh.shape
  kh = k_btkh.shape[2]
  q = q_btnh.reshape(b, t, kh, n // kh, h)          # query head n uses kv head n // (N/K), as HF repeat_kv
  big_neg = -0.7 * jnp.finfo(jnp.float32).max
  outs = []
  for lo in range(0, t, block):
    hi = min(lo + block, t)
    logits = jnp.einsum("btkgh,bskh->bkgts", q[:, lo:hi], k_btkh[:, :hi], preferred_element_type=jnp.float32) * scale
    causal = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]                      # [tq, hi]
    keep = (seg_bt[:, lo:hi, None] == seg_bt[:, None, :hi]) & causal[None]             # [B, tq, hi]
    probs = jax.nn.softmax(jnp.where(keep[:, None, None], logits, big_neg), axis=-1).astype(v_btkh.dtype)
    outs.append(jnp.einsum("bkgts,bskh->btkgh", probs, v_btkh[:, :hi]).reshape(b, hi - lo, n, h))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


# ---- modules -------------------------------------------------------------------------------------

def projection(block: nn.Module, name: str, features: int) -> LoraDense:
  """A projection of `block` (Attention or MLP), with an adapter when `name` is a LoRA target.
  Called inside the block's compact method, so the Dense is its child."""
  c, lora = block.config, block.lora
  return LoraDense(features, lora=lora if lora is not None and name in lora.targets else None,
                   lora_enabled=block.lora_enabled, deterministic=block.deterministic, dtype=c.compute_dtype,
                   param_dtype=c.weight_dtype, name=name)


class RMSNorm(nn.Module):
  eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    # HF casts the normalised activations back before the weight multiply; keep the same order.
    return scale.astype(self.dtype) * xf.astype(self.dtype)


class Attention(nn.Module):
  config: LlamaConfig
  lora: LoraConfig | None = None
  lora_enabled: bool = True
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_btd, cos, sin, q_seg, k_seg, q_slot, k_slot, kv_cache=None):
    c = self.config
    b, t, _ = x_btd.shape
    q = projection(self, "q_proj", c.n_heads * c.head_dim)(x_btd).reshape(b, t, c.n_heads, c.head_dim)
    k = projection(self, "k_proj", c.n_kv_heads * c.head_dim)(x_btd).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = projection(self, "v_proj", c.n_kv_heads * c.head_dim)(x_btd).reshape(b, t, c.n_kv_heads, c.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if kv_cache is not None:
      cache_k, cache_v, index = kv_cache
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, index, 0, 0))
      kv_cache = (k, v)
    # K/V keep their K heads: dot_product_attention groups query heads contiguously (head n uses
    # kv head n // (N/K)), the same grouping as HF's repeat_kv. Logits and softmax run in float32.
    if c.attention == "cudnn" and kv_cache is None:
      # cuDNN's fused kernel skips the blocks above the diagonal itself (is_causal); the segment mask
      # only keeps packed examples apart. Slots equal positions here, so causal-by-slot is plain causal.
      same_segment = (q_seg[:, :, None] == k_seg[:, None, :])[:, None]        # [B, 1, T, T]
      out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=same_segment,
                                         is_causal=True, scale=c.head_dim ** -0.5, implementation="cudnn")
    elif kv_cache is None and c.attention_block:
      out = blocked_causal_attention(q, k.astype(q.dtype), v.astype(q.dtype), q_seg, c.attention_block,
                                     c.head_dim ** -0.5)
    else:
      mask = attention_mask(q_seg, k_seg, q_slot, k_slot)
      out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask,
                                         scale=c.head_dim ** -0.5)
    out = out.reshape(b, t, c.n_heads * c.head_dim)
    return projection(self, "o_proj", c.d_model)(out), kv_cache


class MLP(nn.Module):
  config: LlamaConfig
  lora: LoraConfig | None = None
  lora_enabled: bool = True
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_btd):
    c = self.config
    h_btf = nn.silu(projection(self, "gate_proj", c.ffn_dim)(x_btd)) * projection(self, "up_proj", c.ffn_dim)(x_btd)
    return projection(self, "down_proj", c.d_model)(h_btf)


class DecoderLayer(nn.Module):
  config: LlamaConfig
  lora: LoraConfig | None = None
  lora_enabled: bool = True
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_btd, cos, sin, q_seg, k_seg, q_slot, k_slot, kv_cache=None):
    c = self.config
    kw = dict(config=c, lora=self.lora, lora_enabled=self.lora_enabled, deterministic=self.deterministic)
    norm = dict(eps=c.rms_eps, dtype=c.compute_dtype, param_dtype=c.weight_dtype)
    h, kv_cache = Attention(**kw, name="self_attn")(
        RMSNorm(**norm, name="input_layernorm")(x_btd), cos, sin, q_seg, k_seg, q_slot, k_slot, kv_cache)
    x_btd = x_btd + h
    x_btd = x_btd + MLP(**kw, name="mlp")(RMSNorm(**norm, name="post_attention_layernorm")(x_btd))
    return x_btd, kv_cache


class Llama(nn.Module):
  """The causal LM. `lora=None` builds the plain base model (no `lora` collection)."""

  config: LlamaConfig
  lora: LoraConfig | None = None
  lora_enabled: bool = True

  @nn.compact
  def __call__(self, tokens_bt: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, cache: KVCache | None = None,
               deterministic: bool = True, return_hidden: bool = False):
    """Returns logits [B, T, V] float32 (or final hidden states [B, T, D] with `return_hidden`);
    with a `cache`, returns `(logits, new_cache)`.

    Args:
      tokens_bt: int token ids [B, T].
      positions: [B, T] RoPE positions; default: restart at every segment (0..T-1 without packing).
      segment_ids: [B, T] int; tokens attend only within their segment; 0 marks padding.
      cache: a KVCache; the new tokens are written at `cache.index` and attend to all earlier slots.
      deterministic: False enables LoRA dropout (needs a "dropout" rng).
    """
    c = self.config
    b, t = tokens_bt.shape
    if segment_ids is None:
      segment_ids = jnp.ones((b, t), jnp.int32)
    if positions is None:
      positions = positions_from_segments(segment_ids)
    embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02),
                     dtype=c.compute_dtype, param_dtype=c.weight_dtype, name="embed_tokens")
    x = embed(tokens_bt)
    cos, sin = rope_tables(c, positions)

    q_seg = segment_ids
    if cache is None:
      k_seg, q_slot = segment_ids, jnp.arange(t)
      k_slot = q_slot
    else:
      k_seg = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids.astype(jnp.int32), (0, cache.index))
      q_slot = cache.index + jnp.arange(t)
      k_slot = jnp.arange(cache.size)

    layer_cls = nn.remat(DecoderLayer) if c.remat else DecoderLayer
    new_k, new_v = [], []
    for i in range(c.n_layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i], cache.index)
      x, layer_cache = layer_cls(c, lora=self.lora, lora_enabled=self.lora_enabled,
                                 deterministic=deterministic, name=f"layers_{i}")(
          x, cos, sin, q_seg, k_seg, q_slot, k_slot, layer_cache)
      if cache is not None:
        new_k.append(layer_cache[0])
        new_v.append(layer_cache[1])

    x = RMSNorm(c.rms_eps, c.compute_dtype, c.weight_dtype, name="norm")(x)
    if not c.tie_embeddings:
      self.param("lm_head", nn.initializers.normal(0.02), (c.d_model, c.vocab_size), c.weight_dtype)
    out = x if return_hidden else self.output_head(self.variables["params"], x)
    if cache is None:
      return out
    new_cache = KVCache(keys=tuple(new_k), values=tuple(new_v), segment_ids=k_seg, index=cache.index + t)
    return out, new_cache

  def head_kernel(self, params: Mapping) -> jax.Array:
    """The output projection [D, V] in the compute dtype, from a `params` tree: the transposed embedding
    when tied, else `lm_head`. The one place that choice is made (the model, the prefill, the chunked loss)."""
    c = self.config
    kernel = params["embed_tokens"]["embedding"].T if c.tie_embeddings else params["lm_head"]
    return kernel.astype(c.compute_dtype)

  def output_head(self, params: Mapping, hidden_xd: jax.Array) -> jax.Array:
    """Logits [..., V] float32 from final (normed) hidden states [..., D]. Callers that need logits at a few
    positions only (the prefill) call it on those, not on the whole [B, T, V]."""
    return jnp.dot(hidden_xd, self.head_kernel(params), preferred_element_type=jnp.float32)

  def init_variables(self, rng: jax.Array, seq_len: int = 8) -> dict:
    """Initialise all collections (params, and lora when configured) with a dummy batch."""
    p_rng, d_rng = jax.random.split(rng)
    return self.init({"params": p_rng, "dropout": d_rng}, jnp.zeros((1, seq_len), jnp.int32))
