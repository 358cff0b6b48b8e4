"""Preference losses on sequence log-probabilities: DPO (sigmoid, with label smoothing) and IPO.

With h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) for a pair
(x, chosen y_w, rejected y_l):

  sigmoid (DPO, Rafailov et al. 2023, eq. 7):   -log sigma(beta * h)
  label smoothing eps (conservative DPO):        -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
  ipo (Azar et al. 2023, eq. 17, tau = beta):    (h - 1 / (2 beta))^2

The sigmoid and IPO losses are TRL's (`DPOTrainer`, loss_type "sigmoid" and "ipo"; checked numerically
against TRL 1.16 on fixed per-token log-probs), including its choice of log-probabilities: summed over
the answer's tokens, and for IPO divided by each answer's token count inside the loss (TRL: the summed
form makes the square grow with length; the IPO authors' results use the per-token form). Label
smoothing is the conservative DPO of TRL's "sigmoid" before v1.0 (TRL 1.x keeps only a de-biased
"robust" variant). Implicit rewards r = beta * (log pi - log pi_ref) use the summed log-probs for every
loss type, and reward accuracy counts r_w > r_l strictly (ties, as at step 0, are not correct), as TRL.

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
                      label_smoothing: float = 0.0) -> jax.Array:
  """Per-pair losses [B] float32 from sequence log-probs [B] each (per-token averages for IPO, see above)."""
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
  if beta <= 0:
    raise ValueError(f"beta must be positive, got {beta}")
  if not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
  if label_smoothing and loss_type != "sigmoid":
    raise ValueError("label_smoothing applies to the sigmoid (DPO) loss only")
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  h = (f32(policy_chosen) - f32(ref_chosen)) - (f32(policy_rejected) - f32(ref_rejected))
  if loss_type == "ipo":
    return jnp.square(h - 1.0 / (2.0 * beta))
  losses = -jax.nn.log_sigmoid(beta * h)
  if label_smoothing:
    losses = (1.0 - label_smoothing) * losses - label_smoothing * jax.nn.log_sigmoid(-beta * h)
  return losses


def implicit_rewards(policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array,
                     ref_rejected: jax.Array, *, beta: float) -> dict:
  """{"reward_chosen", "reward_rejected", "margin", "correct"}, each [B] float32, from summed log-probs.
  Reported, not optimised: no gradient flows through them."""
  f32 = lambda x: jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  reward_c = beta * (f32(policy_chosen) - f32(ref_chosen))
  reward_r = beta * (f32(policy_rejected) - f32(ref_rejected))
  return {"reward_chosen": reward_c, "reward_rejected": reward_r, "margin": reward_c - reward_r,
          "correct": (reward_c > reward_r).astype(jnp.float32)}
