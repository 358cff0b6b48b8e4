"""The optimiser: AdamW with linear warmup and cosine decay, a weight-decay mask, global-norm clipping.

Gradient accumulation is *not* done here (no `optax.MultiSteps`): MultiSteps averages per-microbatch
mean gradients, which weights a microbatch with few assistant tokens as much as a full one. The train
step accumulates summed gradients and divides once by the total token count instead (see step.py).
"""

from __future__ import annotations

import re

import jax
import optax

# Leaves not decayed by default: norm scales (and biases, which Llama has none of). Embeddings and the
# output head are decayed only when `decay_embeddings` is set.
_NO_DECAY = (r"(^|/)scale$", r"(^|/)bias$")
_EMBED = (r"embed_tokens/embedding$", r"(^|/)lm_head$")


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def decay_mask(params, decay_embeddings: bool = False):
  patterns = _NO_DECAY + (() if decay_embeddings else _EMBED)

  def keep(path, _):
    p = path_str(path)
    return not any(re.search(pat, p) for pat in patterns)

  return jax.tree_util.tree_map_with_path(keep, params)


def schedule(lr: float, total_steps: int, warmup_steps: int, end_lr_ratio: float = 0.1) -> optax.Schedule:
  warmup = max(0, min(warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=lr * end_lr_ratio)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """optim_cfg: lr, warmup_steps, end_lr_ratio, weight_decay, b1, b2, eps, clip_norm, decay_embeddings, name."""
  sched = schedule(optim_cfg.lr, total_steps, optim_cfg.warmup_steps, optim_cfg.end_lr_ratio)
  if optim_cfg.name == "adamw":
    opt = optax.adamw(sched, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                      weight_decay=optim_cfg.weight_decay,
                      mask=lambda p: decay_mask(p, optim_cfg.decay_embeddings))
  elif optim_cfg.name == "sgd":  # for exactness tests: no per-element normalisation
    opt = optax.sgd(sched)
  else:
    raise ValueError(f"optim.name={optim_cfg.name!r}; use 'adamw' or 'sgd'")
  chain = [optax.clip_by_global_norm(optim_cfg.clip_norm)] if optim_cfg.clip_norm else []
  return optax.chain(*chain, opt), sched
