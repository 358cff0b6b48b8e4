"""Full fine-tuning of the 300M base: every weight trains, lr 2e-5 (the plan's value).

    python -m telugu_jax.train --config configs/full.py
"""

from telugu_jax.configs import lora


def get_config():
  c = lora.get_config()
  c.workdir = "runs/full"
  c.mode = "full"
  c.optim.lr = 2e-5
  c.train.frozen_dtype = "float32"
  return c
