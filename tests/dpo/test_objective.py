"""The DPO objective on a tiny model: one forward pass over [B, 2, L] equals scoring each side on its own,
its gradient equals the chain rule through an independent torch loss, and accumulation is exact."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from telugu_jax.dpo.objective import DPOConfig, dpo_objective, dpo_sums
from telugu_jax.model import Llama, LlamaConfig, LoraConfig
from telugu_jax.train.step import grads_and_stats

CFG = LlamaConfig.tiny()
LCFG = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "up_proj", "down_proj"))


def make_batch(pairs=4, length=20, seed=0):
  """[pairs, 2, L] rows; answers of different lengths, the last pair padding only (empty mask)."""
  rng = np.random.default_rng(seed)
  shape = (pairs, 2, length)
  batch = {"inputs": rng.integers(3, CFG.vocab_size, shape).astype(np.int32),
           "targets": rng.integers(3, CFG.vocab_size, shape).astype(np.int32),
           "loss_mask": np.zeros(shape, np.int32), "segment_ids": np.zeros(shape, np.int32),
           "positions": np.zeros(shape, np.int32)}
  for p in range(pairs - 1):
    for s in range(2):
      n = int(rng.integers(8, length + 1))
      start = int(rng.integers(2, n - 2))
      batch["segment_ids"][p, s, :n] = 1
      batch["positions"][p, s, :n] = np.arange(n)
      batch["loss_mask"][p, s, start:n] = 1
  return batch


def lora_variables(seed=0, b_scale=0.1):
  variables = Llama(CFG, lora=LCFG).init_variables(jax.random.key(seed))
  leaves, tree = jax.tree_util.tree_flatten(variables["lora"])
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  variables["lora"] = jax.tree_util.tree_unflatten(
      tree, [b_scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])
  return variables


def side_logps(model, variables, batch, side):
  """Summed answer log-probs of one side, from its own forward pass (rows [B, L])."""
  rows = {k: v[:, side] for k, v in batch.items()}
  logits = model.apply(variables, rows["inputs"], positions=rows["positions"], segment_ids=rows["segment_ids"])
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  tgt = jnp.take_along_axis(logp, rows["targets"][..., None], -1)[..., 0]
  return jnp.sum(tgt * rows["loss_mask"], -1)


@pytest.mark.parametrize("loss_type,smoothing", [("sigmoid", 0.1), ("ipo", 0.0)])  # eps = 0: test_loss.py
def test_one_forward_pass_loss_and_gradient(loss_type, smoothing):
  beta = 0.5
  model = Llama(CFG, lora=LCFG)
  variables = lora_variables()
  trainable, frozen = {"lora": variables["lora"]}, {"params": variables["params"]}
  batch = make_batch()
  cfg = DPOConfig(beta=beta, loss_type=loss_type, label_smoothing=smoothing, reference="adapter_off")
  (loss, stats), grads = jax.jit(jax.value_and_grad(
      lambda t: dpo_sums(model, cfg, t, frozen, batch, None), has_aux=True))(trainable)

  # Independent: each side alone, the reference as the plain base model, the loss in torch (float64).
  base = Llama(CFG)
  n = batch["loss_mask"].sum(-1).astype(np.float64)  # [B, 2]
  valid = (n > 0).all(-1)
  ref_fn = jax.jit(lambda p: jnp.stack([side_logps(base, {"params": p}, batch, s) for s in (0, 1)], -1))
  ref = torch.tensor(np.asarray(ref_fn(variables["params"]), np.float64))
  pol_fn = lambda t: jnp.stack([side_logps(model, {**frozen, **t}, batch, s) for s in (0, 1)], -1)
  pol, vjp = jax.vjp(jax.jit(pol_fn), trainable)
  scale = np.where(n > 0, n, 1.0) if loss_type == "ipo" else np.ones_like(n)  # TRL's IPO: per-token averages
  tp = torch.tensor(np.asarray(pol, np.float64), requires_grad=True)
  h = (tp[:, 0] - ref[:, 0]) / torch.tensor(scale[:, 0]) - (tp[:, 1] - ref[:, 1]) / torch.tensor(scale[:, 1])
  if loss_type == "sigmoid":
    losses = -(1 - smoothing) * F.logsigmoid(beta * h) - smoothing * F.logsigmoid(-beta * h)
  else:
    losses = (h - 1 / (2 * beta)) ** 2
  total = (losses * torch.tensor(valid, dtype=torch.float64)).sum()
  total.backward()
  np.testing.assert_allclose(float(loss), total.item(), rtol=1e-5)
  (expected_grads,) = jax.jit(vjp)(jnp.asarray(tp.grad.numpy(), jnp.float32))
  chex.assert_trees_all_close(grads, expected_grads, rtol=2e-4, atol=1e-6)
  assert float(stats["pairs"]) == valid.sum() == 3  # the padding pair counts for nothing
  assert float(stats["response_tokens"]) == n[valid].sum()
  rewards = beta * (np.asarray(pol) - ref.numpy())  # from summed log-probs for IPO too (as TRL)
  np.testing.assert_allclose(float(stats["margin"]), (rewards[:, 0] - rewards[:, 1])[valid].sum(), rtol=1e-4)


def test_accumulation_equals_one_big_batch_and_copy_reference():
  model = Llama(CFG, lora=LCFG)
  variables = lora_variables(seed=3)
  trainable, frozen = {"lora": variables["lora"]}, {"params": variables["params"]}
  batch = make_batch(pairs=8, seed=4)
  objective = dpo_objective(model, DPOConfig(beta=0.2))
  run = jax.jit(functools.partial(grads_and_stats, model, objective=objective), static_argnames="accum")
  l1, g1, s1 = run(trainable, frozen, batch, jax.random.key(0), accum=1)
  l4, g4, s4 = run(trainable, frozen, batch, jax.random.key(0), accum=4)
  assert float(s1["pairs"]) == float(s4["pairs"]) == 7
  np.testing.assert_allclose(float(l4), float(l1), rtol=1e-6)
  chex.assert_trees_all_close(g4, g1, rtol=1e-5, atol=1e-8)

  # Full fine-tuning against a frozen copy of the same base gives the same loss as adapter-off LoRA with B = 0.
  fresh = Llama(CFG, lora=LCFG).init_variables(jax.random.key(5))
  sums = jax.jit(dpo_sums, static_argnums=(0, 1))
  lora_loss, _ = sums(model, DPOConfig(beta=0.2), {"lora": fresh["lora"]}, {"params": fresh["params"]}, batch, None)
  full_loss, _ = sums(Llama(CFG), DPOConfig(beta=0.2, reference="copy"), {"params": fresh["params"]},
                      {"reference": fresh["params"]}, batch, None)
  np.testing.assert_allclose(float(full_loss), 7 * np.log(2), rtol=1e-6)
  np.testing.assert_allclose(float(lora_loss), 7 * np.log(2), rtol=1e-6)
