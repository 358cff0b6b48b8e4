"""Continued pretraining on raw Telugu text (loss on every token), full weights.

    python -m telugu_jax.train --config configs/pretrain.py --config.data.train='("corpus.txt",)'
"""

from telugu_jax.configs import lora


def get_config():
  c = lora.get_config()
  c.workdir = "runs/pretrain"
  c.mode = "full"
  c.data.kind = "pretrain"
  c.data.train = ("data/text/train.txt",)
  c.data.validation = ("data/text/val.txt",)
  c.optim.lr = 3e-4
  c.optim.weight_decay = 0.1
  c.optim.b2 = 0.95
  c.train.epochs = 1.0
  c.train.frozen_dtype = "float32"
  return c
