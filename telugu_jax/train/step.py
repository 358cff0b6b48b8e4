"""Train state and the pure, jitted train/eval steps.

`train_step(state, batch)` takes a batch of [accum * B, L] rows, splits it into `accum` microbatches,
and runs them through a `lax.scan` that adds up the gradients of each microbatch's *summed* loss and
its token count; the sum is divided once by the total count. So accumulation 4 x B equals 1 x 4B
exactly (up to float summation order), whatever the number of assistant tokens per row.

What is minimised is an `Objective`: by default the masked cross-entropy of SFT and pretraining
(`sft_objective`); DPO (telugu_jax/dpo/objective.py) passes its own. An objective returns a *sum* and
the statistics that hold its denominator (loss tokens for SFT, preference pairs for DPO), so
accumulation stays exact for every objective.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
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


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a step minimises.

  sums: `(trainable, frozen, batch, rng, *, deterministic) -> (loss_sum, stats)`; stats are sums too.
  denom: the stats key the summed loss and its gradient are divided by, once per (accumulated) batch.
  metrics: `(stats, batch) -> dict` of logged scalars besides loss, grad_norm, param_norm and lr.
  """

  sums: Callable
  denom: str
  metrics: Callable


def _sft_metrics(stats: Mapping, batch: Mapping) -> dict:
  n = jnp.maximum(stats["tokens"], 1.0)
  return {"ce": stats["ce_sum"] / n, "loss_tokens": stats["tokens"], "accuracy": stats["correct"] / n,
          "real_tokens": jnp.sum(batch["segment_ids"] > 0)}


def sft_objective(model, z_loss: float = 0.0, loss_chunk: int = 0) -> Objective:
  """Masked next-token cross-entropy (SFT, pretraining), normalised by the loss-token count; `loss_chunk` > 0
  never materialises the full logits (see loss.chunked_token_stats)."""
  return Objective(sums=functools.partial(loss_sums, model, z_loss=z_loss, loss_chunk=loss_chunk), denom="tokens",
                   metrics=_sft_metrics)


def _split_micro(batch: Mapping, accum: int) -> dict:
  def split(x):
    if x.shape[0] % accum:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {accum} microbatches")
    return x.reshape(accum, x.shape[0] // accum, *x.shape[1:])

  return {k: split(v) for k, v in batch.items()}


def grads_and_stats(model, trainable, frozen, batch, rng, *, accum: int = 1, z_loss: float = 0.0,
                    objective: Objective | None = None):
  """(mean loss, gradient of the mean, stats) over all of `batch`, in `accum` microbatches; the mean is
  over the objective's denominator (SFT: loss tokens)."""
  objective = objective or sft_objective(model, z_loss)
  grad_fn = jax.value_and_grad(
      lambda t, mb, r: objective.sums(t, frozen, mb, r, deterministic=False), has_aux=True)
  micro = _split_micro(batch, accum)
  zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
  first = jax.tree_util.tree_map(lambda x: x[0], micro)
  stats_shape = jax.eval_shape(lambda: objective.sums(trainable, frozen, first, rng, deterministic=False)[1])
  init = (zeros, jnp.zeros((), jnp.float32), jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), stats_shape))

  def body(carry, xs):
    g_acc, l_acc, s_acc = carry
    mb, i = xs
    (l, stats), g = grad_fn(trainable, mb, jax.random.fold_in(rng, i))
    g_acc = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
    s_acc = {k: s_acc[k] + stats[k] for k in s_acc}
    return (g_acc, l_acc + l, s_acc), None

  (g_sum, l_sum, stats), _ = jax.lax.scan(body, init, (micro, jnp.arange(accum)))
  denom = jnp.maximum(stats[objective.denom], 1.0)
  grads = jax.tree_util.tree_map(lambda g: g / denom, g_sum)
  return l_sum / denom, grads, stats


def train_step(state: TrainState, batch: Mapping, *, model, tx, accum: int = 1, z_loss: float = 0.0,
               schedule=None, objective: Objective | None = None) -> tuple[TrainState, dict]:
  objective = objective or sft_objective(model, z_loss)
  rng = jax.random.fold_in(state.rng, state.step)
  loss, grads, stats = grads_and_stats(model, state.trainable, state.frozen, batch, rng, accum=accum,
                                       objective=objective)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics = {"loss": loss, **objective.metrics(stats, batch),
             "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(trainable)}
  if schedule is not None:
    metrics["lr"] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: Mapping, *, model, objective: Objective | None = None) -> dict:
  """Summed validation statistics for one batch (callers add them up, then divide). SFT: ce_sum, tokens,
  correct (no z-loss: validation reports cross-entropy); another objective: its own stats."""
  if objective is None:
    total, stats = loss_sums(model, state.trainable, state.frozen, batch, None, deterministic=True)
    return {"ce_sum": stats["ce_sum"], "tokens": stats["tokens"], "correct": stats["correct"]}
  total, stats = objective.sums(state.trainable, state.frozen, batch, None, deterministic=True)
  return {"loss_sum": total, **stats}


def make_steps(model, tx, *, accum=1, z_loss=0.0, schedule=None, objective: Objective | None = None,
               loss_chunk: int = 0):
  train_objective = objective or (sft_objective(model, z_loss, loss_chunk) if loss_chunk else None)
  return (functools.partial(train_step, model=model, tx=tx, accum=accum, z_loss=z_loss, schedule=schedule,
                            objective=train_objective),
          functools.partial(eval_step, model=model, objective=objective))
