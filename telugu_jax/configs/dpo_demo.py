"""The demo DPO run (`python -m telugu_jax.dpo demo` after `make demo`): configs/dpo.py shrunk for the demo's
SFT model, as configs/demo.py shrinks configs/lora.py. Pairs come from `telugu_jax.dpo.demo`."""

from telugu_jax.configs import dpo


def get_config():
  c = dpo.get_config()
  c.workdir = "runs/demo/dpo"
  c.base = "runs/demo/sft"
  c.data.train = ("runs/demo/prefs/train.jsonl",)
  c.data.validation = ("runs/demo/prefs/val.jsonl",)
  c.data.max_seq_len = 512
  c.data.batch_size = 8
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.0
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 5
  c.dpo.beta = 0.3
  c.train.max_steps = 60
  c.train.dtype = "float32"
  c.train.frozen_dtype = "float32"
  c.train.log_every = 10
  c.train.eval_every = 30
  c.train.save_every = 60
  return c
