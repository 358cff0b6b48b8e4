"""A fixed-size key/value cache, passed into and returned from the model as a plain pytree.

The cache is an explicit argument rather than a mutable Linen collection: decoding stays a pure
function `(params, tokens, cache) -> (logits, cache)` that jits once for the whole generation.

Every row of a batch writes at the same slot (`index`); prompts of different lengths are left-padded,
and the padding slots carry segment id 0 so no real token attends to them.

Shapes: L layers, B batch, S cache slots, K kv heads, H head dim.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
  keys: tuple[jax.Array, ...]      # L x [B, S, K, H]
  values: tuple[jax.Array, ...]    # L x [B, S, K, H]
  segment_ids: jax.Array           # [B, S] int32; 0 = padding or not yet written
  index: jax.Array                 # [] int32; next slot to write

  @classmethod
  def create(cls, config, batch: int, size: int, dtype=None) -> KVCache:
    dtype = dtype or config.compute_dtype
    shape = (batch, size, config.n_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers))
    return cls(keys=zeros, values=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers)),
               segment_ids=jnp.zeros((batch, size), jnp.int32), index=jnp.zeros((), jnp.int32))

  @property
  def size(self) -> int:
    return self.segment_ids.shape[1]
