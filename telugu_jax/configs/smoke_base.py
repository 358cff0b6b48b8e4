"""The test suite's base: the demo base at the `smoke` preset (~0.25M parameters), 40 steps of 8 x 128 tokens.

tests/conftest.py `smoke_run` trains it (then configs/smoke.py on top) through `telugu_jax.demo.run`.
"""

from telugu_jax.configs import demo_base


def get_config():
  c = demo_base.get_config()
  c.workdir = "runs/smoke/base"
  c.tokenizer = "runs/smoke/tokenizer"
  c.model.preset = "smoke"
  c.data.train = ("runs/smoke/text/train.txt",)
  c.data.validation = ("runs/smoke/text/val.txt",)
  c.data.max_seq_len = 128
  c.data.batch_size = 8
  c.optim.warmup_steps = 2
  c.train.max_steps = 40
  c.train.eval_every = 40
  c.train.save_every = 40
  return c
