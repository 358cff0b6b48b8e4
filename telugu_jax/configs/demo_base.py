"""The CPU demo's base: a ~5M-parameter `demo` LLaMA pretrained on the bundled Telugu prose (`make demo`).

It is configs/pretrain.py shrunk; `telugu_jax.demo` writes the data and the tokenizer it names, then trains it
with the same trainer as every other run. Paths are relative to where the demo runs (its --workdir moves them).
"""

from telugu_jax.configs import pretrain


def get_config():
  c = pretrain.get_config()
  c.workdir = "runs/demo/base"
  c.base = ""                          # from scratch
  c.tokenizer = "runs/demo/tokenizer"
  c.model.preset = "demo"
  c.data.train = ("runs/demo/text/train.txt",)
  c.data.validation = ("runs/demo/text/val.txt",)
  c.data.max_seq_len = 256
  c.data.batch_size = 4
  c.data.num_packing_bins = 8
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.01
  c.train.max_steps = 480
  c.train.dtype = "float32"            # bf16 matmuls are emulated (slow) on most CPUs
  c.train.log_every = 10
  c.train.eval_every = 480
  c.train.save_every = 480
  # The demo's numbers (docs/demo.md) were measured on one device with attention in one pass, not with the
  # trainer's CPU recipe: its 12-question results move with float rounding (docs/demo.md), so it keeps these.
  c.mesh.devices = 1
  c.train.attention_block = 0
  return c
