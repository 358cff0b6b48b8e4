"""Implicit-reward report of a policy against its reference on held-out preference pairs.

    python -m telugu_jax.dpo eval --model runs/dpo --pairs data/prefs/val.jsonl [--reference runs/lora]

Reward r = beta * (log pi(y|x) - log pi_ref(y|x)) summed over the answer's tokens (as in training).
Reported: DPO loss, reward accuracy (r_chosen > r_rejected, strictly), mean margin and rewards, the
KL estimate (exact next-token KL averaged over answer tokens), overall and per group of a meta key
(e.g. `rejected_by` for the demo pairs). The reference is the policy's own adapter switched off (a DPO
LoRA run: its base is the merged SFT model), or another model directory given as `reference`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence

import jax
import numpy as np

from telugu_jax.dpo.data import PairLoaderConfig, pair_corpus, pair_dataset
from telugu_jax.dpo.objective import DPOConfig, pair_outputs
from telugu_jax.dpo.records import iter_pairs
from telugu_jax.model.io import LoadedModel
from telugu_jax.model.lora import merge_lora

# Module level with the model and config static, so repeated reports (before/after) compile once.
_pair_outputs = jax.jit(functools.partial(pair_outputs, deterministic=True), static_argnums=(0, 1))


def _summary(rows: list[dict]) -> dict:
  n = len(rows)
  if not n:
    return {"pairs": 0}
  mean = lambda k: float(np.mean([r[k] for r in rows]))
  out = {"pairs": n, "loss": mean("loss"), "reward_accuracy": mean("correct"), "reward_margin": mean("margin"),
         "rewards_chosen": mean("reward_chosen"), "rewards_rejected": mean("reward_rejected")}
  if "kl_sum" in rows[0]:
    out["kl"] = float(sum(r["kl_sum"] for r in rows) / max(sum(r["tokens"] for r in rows), 1.0))
  return out


def score_pairs(policy: LoadedModel, paths: str | Sequence[str], *, reference: LoadedModel | None = None,
                beta: float = 0.1, loss_type: str = "sigmoid", max_seq_len: int = 1024, batch_size: int = 8,
                group_by: str | None = None, over_long: str = "reject") -> dict:
  """{"all": summary, "groups": {value: summary}} over the pairs of `paths` that fit `max_seq_len`.

  `reference=None`: the policy's adapter switched off (the policy must hold one). Otherwise the
  reference's weights (its adapter merged) run as a second model.
  """
  tokenizer = policy.tokenizer
  if tokenizer is None:
    raise ValueError(f"{policy.path} has no tokenizer/ folder")
  corpus = pair_corpus(paths, policy.chat_format(), max_seq_len, over_long)
  variables = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in policy.variables.items()}
  if reference is None:
    if "lora" not in variables:
      raise ValueError(f"{policy.path} holds no adapter, so 'adapter off' is the policy itself: give the reference "
                       "model (--reference DIR)")
    cfg = DPOConfig(beta=beta, loss_type=loss_type, reference="adapter_off")
    trainable, frozen = {"lora": variables["lora"]}, {"params": variables["params"]}
  else:
    cfg = DPOConfig(beta=beta, loss_type=loss_type, reference="copy")
    ref = reference.variables
    ref_params = merge_lora(ref["params"], ref["lora"], reference.lora_config) if "lora" in ref else ref["params"]
    trainable, frozen = variables, {"reference": ref_params}
  model = policy.model()
  fn = functools.partial(_pair_outputs, model, cfg)
  rows = []
  loader = PairLoaderConfig(max_seq_len=max_seq_len, batch_size=batch_size, shuffle=False, num_epochs=1)
  for batch in pair_dataset(corpus, loader, tokenizer.pad_id):
    out = jax.device_get(fn(trainable, frozen, batch, None))
    for i in range(len(out["valid"])):
      if out["valid"][i]:
        rows.append({k: float(v[i]) for k, v in out.items()})
  if len(rows) != len(corpus):
    raise AssertionError(f"scored {len(rows)} pairs of {len(corpus)}")
  result = {"all": _summary(rows), "rejected": corpus.summary["rejected"]}
  if group_by:
    meta = {}
    for p in (paths if isinstance(paths, list | tuple) else [paths]):
      meta.update({pair.id: pair.meta.get(group_by) for pair in iter_pairs(p)})
    groups = defaultdict(list)
    for pid, row in zip(corpus.ids, rows, strict=True):
      groups[str(meta.get(pid))].append(row)
    result["groups"] = {k: _summary(v) for k, v in sorted(groups.items())}
  return result
