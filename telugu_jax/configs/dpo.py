"""DPO with LoRA on top of the SFT model: `python -m telugu_jax.train --config configs/dpo.py`.

    python -m telugu_jax.dpo read --in prefs.jsonl --out data/prefs/read     # upstream pairs -> our JSONL
    python -m telugu_jax.train --config configs/dpo.py --config.base=runs/lora

The SFT adapter in `base` is merged into its base once; a fresh adapter trains with the DPO loss and the
reference is the same model with that adapter switched off. Full fine-tuning: --config.mode=full (a frozen
reference copy; --config.dpo.precompute_reference=True computes the reference log-probs once instead).

lr 5e-6 and beta 0.1, as the alignment handbook's (Q)LoRA DPO recipe: DPO moves the policy away from a good
SFT model, and much larger steps make the log-probs of *both* answers fall (the common failure). For full
fine-tuning use ~5e-7 (TRL's default is 1e-6).
"""

import ml_collections

from telugu_jax.configs import lora


def get_config() -> ml_collections.ConfigDict:
  c = lora.get_config()
  c.objective = "dpo"                  # telugu_jax.train.tasks.OBJECTIVES: the DPO task
  c.workdir = "runs/dpo"
  c.base = "runs/lora"                 # the SFT model (adapter or full weights): the start and the reference
  c.data.kind = "preference"
  c.data.train = ("data/prefs/train.jsonl",)
  c.data.validation = ("data/prefs/val.jsonl",)
  c.data.batch_size = 16               # pairs per optimiser step (2x rows go through the model)
  c.optim.lr = 5e-6
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.0
  c.train.epochs = 1.0
  c.train.eval_every = 100
  c.train.save_every = 100

  c.dpo = ml_collections.ConfigDict()
  c.dpo.beta = 0.1
  c.dpo.loss_type = "sigmoid"          # "sigmoid" (DPO) | "ipo"
  c.dpo.label_smoothing = 0.0          # > 0: conservative DPO (sigmoid only)
  c.dpo.precompute_reference = False   # True: reference log-probs computed once before training
  c.dpo.over_long = "reject"           # pairs longer than max_seq_len after dropping old turns: "reject" | "truncate"
  c.dpo.pad_to_multiple = 0            # 0: rows always max_seq_len wide (one compile); N: bucket widths
  return c
