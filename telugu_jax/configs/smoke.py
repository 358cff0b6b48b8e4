"""~0.25M-parameter SFT run on the bundled demo conversations, for tests: under a minute on 2 CPU cores.

The test suite trains it once per session (tests/conftest.py `smoke_run`); chat, evaluate, serve and
export tests share that run.
"""

from telugu_jax.configs import lora


def get_config():
  c = lora.get_config()
  c.workdir = "runs/smoke"
  c.base = "runs/smoke/base"
  c.model.preset = "smoke"
  c.data.train = ("runs/smoke/data/train.jsonl",)
  c.data.validation = ("runs/smoke/data/val.jsonl",)
  c.data.max_seq_len = 256
  c.data.batch_size = 8
  c.data.num_packing_bins = 4
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 5
  c.train.max_steps = 30
  c.train.dtype = "float32"
  c.train.frozen_dtype = "float32"
  c.train.log_every = 10
  c.train.eval_every = 15
  c.train.save_every = 15
  c.train.async_checkpoint = False
  c.mesh.devices = 1
  return c
