"""Masked next-token cross-entropy, summed, so callers divide once by the token count of the whole batch.

Why sums: the loss of a step is the mean over *all* assistant tokens of the (accumulated) batch. A mean
of per-row or per-microbatch means over-weights rows with few assistant tokens (the gradient-
accumulation bug other trainers shipped). So the core returns the sum and the count separately; the
step adds sums and counts over microbatches and divides once.

Batch: `inputs`, `targets`, `loss_mask`, `segment_ids`, `positions`, all [B, L] (see data/loader.py).
Pretraining uses the same path with `loss_mask` = every real token.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from telugu_jax.model.lora import join_variables


def token_losses(logits_btv: jax.Array, targets_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token cross-entropy and log-partition (for z-loss), both [B, L] float32."""
  logits = logits_btv.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_bt[..., None], axis=-1)[..., 0]
  return lse - target_logit, lse


def loss_sums(model: nn.Module, trainable: Mapping, frozen: Mapping, batch: Mapping, rng: jax.Array | None,
              *, z_loss: float = 0.0, deterministic: bool | None = None) -> tuple[jax.Array, dict]:
  """Sum of masked token losses (+ z-loss) and the statistics to normalise and log it.

  Returns (loss_sum, aux) with aux = {"tokens": mask sum, "ce_sum": cross-entropy sum, "correct": argmax hits}.
  """
  variables = join_variables(trainable, frozen)
  if deterministic is None:
    deterministic = rng is None
  logits = model.apply(variables, batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"],
                       deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})
  mask = batch["loss_mask"].astype(jnp.float32)
  ce, lse = token_losses(logits, batch["targets"])
  ce_sum = jnp.sum(ce * mask)
  loss_sum = ce_sum + (z_loss * jnp.sum(jnp.square(lse) * mask) if z_loss else 0.0)
  correct = jnp.sum((jnp.argmax(logits, -1) == batch["targets"]) * mask)
  return loss_sum, {"tokens": jnp.sum(mask), "ce_sum": ce_sum, "correct": correct}


def loss_fn(model: nn.Module, trainable: Mapping, frozen: Mapping, batch: Mapping, rng: jax.Array | None,
            *, z_loss: float = 0.0) -> tuple[jax.Array, dict]:
  """Mean loss over the batch's loss tokens: `partial(loss_fn, model)` is `loss_fn(trainable, frozen, batch, rng)`."""
  total, aux = loss_sums(model, trainable, frozen, batch, rng, z_loss=z_loss)
  return total / jnp.maximum(aux["tokens"], 1.0), aux


def cross_entropy_reference(logits, targets):
  """optax's integer-label cross-entropy, used by the tests as an independent check of `token_losses`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
