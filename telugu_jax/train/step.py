"""Train state and the pure, jitted train/eval steps.

`train_step(state, batch)` takes a batch of [accum * B, L] rows, splits it into `accum` microbatches,
and runs them through a `lax.scan` that adds up the gradients of each microbatch's *summed* loss and
its token count; the sum is divided once by the total count. So accumulation 4 x B equals 1 x 4B
exactly (up to float summation order), whatever the number of assistant tokens per row.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from telugu_jax.train.loss import loss_sums


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  trainable: Any          # {"lora": ...} or {"params": ...}, float32 master weights
  frozen: Any             # {"params": ...} for LoRA (may be bf16), {} for full fine-tuning
  opt_state: Any
  rng: jax.Array          # for LoRA dropout; folded with the step


def create_state(trainable, frozen, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen,
                    opt_state=tx.init(trainable), rng=rng)


def _split_micro(batch: Mapping, accum: int) -> dict:
  def split(x):
    if x.shape[0] % accum:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {accum} microbatches")
    return x.reshape(accum, x.shape[0] // accum, *x.shape[1:])

  return {k: split(v) for k, v in batch.items()}


def grads_and_stats(model, trainable, frozen, batch, rng, *, accum: int = 1, z_loss: float = 0.0):
  """(mean loss, gradient of the mean, stats) over all loss tokens of `batch`, in `accum` microbatches."""
  grad_fn = jax.value_and_grad(
      lambda t, mb, r: loss_sums(model, t, frozen, mb, r, z_loss=z_loss, deterministic=False), has_aux=True)
  micro = _split_micro(batch, accum)
  zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
  init = (zeros, jnp.zeros((), jnp.float32), {"tokens": 0.0, "ce_sum": 0.0, "correct": 0.0})

  def body(carry, xs):
    g_acc, l_acc, s_acc = carry
    mb, i = xs
    (l, stats), g = grad_fn(trainable, mb, jax.random.fold_in(rng, i))
    g_acc = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
    s_acc = {k: s_acc[k] + stats[k] for k in s_acc}
    return (g_acc, l_acc + l, s_acc), None

  (g_sum, l_sum, stats), _ = jax.lax.scan(body, init, (micro, jnp.arange(accum)))
  denom = jnp.maximum(stats["tokens"], 1.0)
  grads = jax.tree_util.tree_map(lambda g: g / denom, g_sum)
  return l_sum / denom, grads, stats


def train_step(state: TrainState, batch: Mapping, *, model, tx, accum: int = 1, z_loss: float = 0.0,
               schedule=None) -> tuple[TrainState, dict]:
  rng = jax.random.fold_in(state.rng, state.step)
  loss, grads, stats = grads_and_stats(model, state.trainable, state.frozen, batch, rng, accum=accum,
                                       z_loss=z_loss)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics = {"loss": loss, "ce": stats["ce_sum"] / jnp.maximum(stats["tokens"], 1.0),
             "loss_tokens": stats["tokens"], "accuracy": stats["correct"] / jnp.maximum(stats["tokens"], 1.0),
             "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(trainable),
             "real_tokens": jnp.sum(batch["segment_ids"] > 0)}
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: Mapping, *, model) -> dict:
  """Summed validation statistics for one batch (callers add them up, then divide)."""
  total, stats = loss_sums(model, state.trainable, state.frozen, batch, None, deterministic=True)
  return {"ce_sum": stats["ce_sum"], "tokens": stats["tokens"], "correct": stats["correct"]}


def make_steps(model, tx, *, accum=1, z_loss=0.0, schedule=None):
  return (functools.partial(train_step, model=model, tx=tx, accum=accum, z_loss=z_loss, schedule=schedule),
          functools.partial(eval_step, model=model))
