"""The DPO objective for the shared train step (telugu_jax/train/step.py `Objective`).

Batch: `inputs targets loss_mask segment_ids positions` [B, 2, L] (axis 1: chosen, rejected; see data.py),
plus `ref_logps` [B, 2] when the reference log-probs were precomputed.

The policy sees both sides in ONE forward pass: [B, 2, L] is flattened to 2B rows (pair i's sides are rows
2i and 2i+1, so a batch-sharded pair never straddles devices). The reference is, by `reference`:
  "adapter_off"  LoRA: the same model and variables with `lora_enabled=False`. The SFT adapter was merged
                 into the frozen base before training, and the DPO adapter starts at B = 0, so at step 0
                 policy == reference bit for bit (the loss is exactly log 2). No second copy in memory.
  "copy"         full fine-tuning: a frozen copy of the starting weights in `frozen["reference"]`.
  "precomputed"  `batch["ref_logps"]`, computed once before training (no reference in memory at all).
The reference forward is wrapped in `stop_gradient`; it is also one pass over the 2B rows.

Statistics are sums over the valid pairs of a batch (a padding row has an empty mask and counts for
nothing), so gradient accumulation divides once by the number of pairs, exactly as SFT divides by tokens.
Logged: loss, rewards chosen/rejected, reward margin and accuracy, policy log-probs, and the KL estimate:
the exact KL(pi || pi_ref) of the next-token distribution at each answer token, averaged over those tokens
(not available with precomputed reference log-probs, which keep no reference logits).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from telugu_jax.dpo.loss import LOSS_TYPES, implicit_rewards, preference_losses, sequence_logps, token_kl
from telugu_jax.model.lora import join_variables
from telugu_jax.train.step import Objective

REFERENCES = ("adapter_off", "copy", "precomputed")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
  beta: float = 0.1
  loss_type: str = "sigmoid"        # "sigmoid" (DPO) | "ipo"
  label_smoothing: float = 0.0      # conservative DPO (sigmoid only)
  reference: str = "adapter_off"

  def __post_init__(self):
    if self.loss_type not in LOSS_TYPES:
      raise ValueError(f"dpo.loss_type={self.loss_type!r}; choose one of {LOSS_TYPES}")
    if self.reference not in REFERENCES:
      raise ValueError(f"reference={self.reference!r}; choose one of {REFERENCES}")
    if self.beta <= 0:
      raise ValueError(f"dpo.beta must be positive, got {self.beta}")
    if not 0.0 <= self.label_smoothing < 0.5:
      raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
    if self.label_smoothing and self.loss_type != "sigmoid":
      raise ValueError("dpo.label_smoothing applies to loss_type='sigmoid' only")


def _flat(batch: Mapping) -> dict:
  """[B, 2, L] -> [2B, L] for the sequence fields."""
  return {k: batch[k].reshape(-1, batch[k].shape[-1]) for k in ("inputs", "targets", "loss_mask", "segment_ids",
                                                               "positions")}


def _forward(model, variables, rows: Mapping, *, deterministic: bool, rng) -> jax.Array:
  return model.apply(variables, rows["inputs"], positions=rows["positions"], segment_ids=rows["segment_ids"],
                     deterministic=deterministic, rngs=None if rng is None else {"dropout": rng})


def pair_outputs(model, cfg: DPOConfig, trainable: Mapping, frozen: Mapping, batch: Mapping, rng, *,
                 deterministic: bool = True) -> dict:
  """Per-pair arrays [B] of one batch: loss, reward_chosen, reward_rejected, margin, correct, valid,
  logps_chosen, logps_rejected, tokens (answer tokens of both sides), and kl_sum when the reference
  logits exist. `model` is the policy (with its LoRA config for "adapter_off")."""
  rows = _flat(batch)
  b = batch["inputs"].shape[0]
  policy_vars = join_variables(trainable, {k: v for k, v in frozen.items() if k != "reference"})
  logits = _forward(model, policy_vars, rows, deterministic=deterministic, rng=rng)   # [2B, L, V]
  logps, counts = sequence_logps(logits, rows["targets"], rows["loss_mask"])          # [2B], [2B]

  ref_logits = None
  if cfg.reference == "precomputed":
    if "ref_logps" not in batch:
      raise ValueError("reference='precomputed' but the batch has no 'ref_logps'")
    ref_logps = batch["ref_logps"].reshape(-1).astype(jnp.float32)
  else:
    if cfg.reference == "adapter_off":
      if model.lora is None:
        raise ValueError("reference='adapter_off' needs a LoRA policy; full fine-tuning uses 'copy' or 'precomputed'")
      ref_model, ref_vars = model.clone(lora_enabled=False), policy_vars
    else:
      if "reference" not in frozen:
        raise ValueError("reference='copy' but the frozen state holds no 'reference' weights")
      ref_model, ref_vars = model.clone(lora=None), {"params": frozen["reference"]}
    ref_logits = jax.lax.stop_gradient(_forward(ref_model, ref_vars, rows, deterministic=True, rng=None))
    ref_logps, _ = sequence_logps(ref_logits, rows["targets"], rows["loss_mask"])

  if cfg.loss_type == "ipo":  # TRL's IPO: per-token averages inside the loss (see loss.py)
    safe = jnp.maximum(counts, 1.0)
    pol, ref = logps / safe, ref_logps / safe
  else:
    pol, ref = logps, ref_logps
  pol, ref, n_bt = pol.reshape(b, 2), ref.reshape(b, 2), counts.reshape(b, 2)
  losses = preference_losses(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta, loss_type=cfg.loss_type,
                             label_smoothing=cfg.label_smoothing)
  logps_bt, ref_bt = logps.reshape(b, 2), ref_logps.reshape(b, 2)
  rewards = implicit_rewards(logps_bt[:, 0], logps_bt[:, 1], ref_bt[:, 0], ref_bt[:, 1], beta=cfg.beta)
  logps_bt = jax.lax.stop_gradient(logps_bt)
  out = {"loss": losses, **rewards, "valid": ((n_bt[:, 0] > 0) & (n_bt[:, 1] > 0)).astype(jnp.float32),
         "logps_chosen": logps_bt[:, 0], "logps_rejected": logps_bt[:, 1], "tokens": n_bt.sum(axis=1)}
  if ref_logits is not None:
    kl_bt = token_kl(jax.lax.stop_gradient(logits), ref_logits) * rows["loss_mask"].astype(jnp.float32)
    out["kl_sum"] = kl_bt.reshape(b, -1).sum(axis=1)
  return out


def dpo_sums(model, cfg: DPOConfig, trainable: Mapping, frozen: Mapping, batch: Mapping, rng, *,
             deterministic: bool | None = None) -> tuple[jax.Array, dict]:
  """(sum of per-pair losses, summed statistics) of one batch over its valid pairs (a padding row has an
  empty mask and counts for nothing); `partial(dpo_sums, model, cfg)` is the objective's `sums`."""
  if deterministic is None:
    deterministic = rng is None
  out = pair_outputs(model, cfg, trainable, frozen, batch, rng, deterministic=deterministic)
  valid = out.pop("valid")
  loss = jnp.sum(out.pop("loss") * valid)
  stats = {"pairs": jnp.sum(valid), "response_tokens": jnp.sum(out.pop("tokens") * valid),
           **{k: jnp.sum(v * valid) for k, v in out.items()}}
  return loss, stats


def _per_pair(stats: Mapping, prefix: str = "") -> dict:
  n = jnp.maximum(stats["pairs"], 1.0)
  names = {"rewards_chosen": "reward_chosen", "rewards_rejected": "reward_rejected", "reward_margin": "margin",
           "reward_accuracy": "correct", "logps_chosen": "logps_chosen", "logps_rejected": "logps_rejected"}
  out = {prefix + name: stats[key] / n for name, key in names.items()}
  if "kl_sum" in stats:
    out[f"{prefix}kl"] = stats["kl_sum"] / jnp.maximum(stats["response_tokens"], 1.0)
  return out


def dpo_metrics(stats: Mapping, batch: Mapping) -> dict:
  """Per-pair means of a train step's sums, plus the token counts the logger's throughput needs."""
  return {**_per_pair(stats), "pairs": stats["pairs"], "loss_tokens": stats["response_tokens"],
          "real_tokens": jnp.sum(batch["segment_ids"] > 0)}


def summarise_eval(sums: Mapping) -> dict:
  """Validation metrics from eval-step sums added over a dataset (`loss_sum` included)."""
  n = max(float(sums["pairs"]), 1.0)
  out = {"val_loss": float(sums["loss_sum"]) / n, "val_pairs": float(sums["pairs"])}
  out.update({k: float(v) for k, v in _per_pair({k: jnp.asarray(v) for k, v in sums.items()}, "val_").items()})
  return out


def dpo_objective(model, cfg: DPOConfig) -> Objective:
  return Objective(sums=functools.partial(dpo_sums, model, cfg), denom="pairs", metrics=dpo_metrics)
