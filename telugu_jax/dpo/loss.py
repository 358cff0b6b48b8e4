"""Preference losses on sequence log-probabilities: DPO (sigmoid, with label smoothing) and IPO.

With h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) for a pair
(x, chosen y_w, rejected y_l):

  sigmoid (DPO, Rafailov et al. 2023, eq. 7):   -log sigma(beta * h)
  label smoothing eps (conservative DPO):        -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
  ipo (Azar et al. 2023, eq. 17, tau = beta):    (h - 1 / (2 beta))^2

These are TRL's definitions (`DPOTrainer`, loss_type "sigmoid" with `label_smoothing`, and "ipo"),
including its choice of log-probabilities: summed over the answer's tokens for sigmoid, and averaged
per token for IPO (TRL divides by the answer length for IPO; the paper states IPO on sequence
probabilities, whose square grows with length). Implicit rewards: r = beta * (log pi - log pi_ref);
reward accuracy counts r_w > r_l strictly (ties, as at step 0, are not correct), as TRL does.

Everything here is a pure function of arrays, in float32; the model-facing part is `objective.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_TYPES = ("sigmoid", "ipo")


def sequence_logps(logits_btv: jax.Array, targets_bt: jax.Array, mask_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed log-probability of the masked targets per row, and the number of masked tokens: [B], [B] float32."""
  logits = logits_btv.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets_bt[..., None], axis=-1)[..., 0]
  logp = target_logit - jax.nn.logsumexp(logits, axis=-1)
  mask = mask_bt.astype(jnp.float32)
  return jnp.sum(logp * mask, axis=-1), jnp.sum(mask, axis=-1)


def token_kl(policy_logits_btv: jax.Array, ref_logits_btv: jax.Array) -> jax.Array:
  """KL(pi || pi_ref) of the next-token distributions at every position: [B, T] float32 (exact, not sampled)."""
  logp = jax.nn.log_softmax(policy_logits_btv.astype(jnp.float32), axis=-1)
  logq = jax.nn.log_softmax(ref_logits_btv.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def preference_losses(policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array,
                      ref_rejected: jax.Array, *, beta: float, loss_type: str = "sigmoid",
                      label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
  """Per-pair losses [B] and per-pair statistics from sequence log-probs [B] each.

  Returns (losses, {"reward_chosen", "reward_rejected", "margin", "correct"}), all [B] float32; rewards
  carry no gradient (they are reported, not optimised).
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
  if beta <= 0:
    raise ValueError(f"beta must be positive, got {beta}")
  if not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
  if label_smoothing and loss_type != "sigmoid":
    raise ValueError("label_smoothing applies to the sigmoid (DPO) loss only")
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  pc, pr, rc, rr = f32(policy_chosen), f32(policy_rejected), f32(ref_chosen), f32(ref_rejected)
  h = (pc - rc) - (pr - rr)
  if loss_type == "sigmoid":
    losses = -jax.nn.log_sigmoid(beta * h)
    if label_smoothing:
      losses = (1.0 - label_smoothing) * losses - label_smoothing * jax.nn.log_sigmoid(-beta * h)
  else:
    losses = jnp.square(h - 1.0 / (2.0 * beta))
  reward_c = jax.lax.stop_gradient(beta * (pc - rc))
  reward_r = jax.lax.stop_gradient(beta * (pr - rr))
  stats = {"reward_chosen": reward_c, "reward_rejected": reward_r, "margin": reward_c - reward_r,
           "correct": (reward_c > reward_r).astype(jnp.float32)}
  return losses, stats
