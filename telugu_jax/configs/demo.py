"""The CPU demo's SFT stage: LoRA on the ~5M `demo` base that `make demo` pretrains first.

    make demo        (tokenizer -> pretrain base -> this LoRA SFT -> perplexity base vs SFT -> samples)

It is configs/lora.py shrunk (big_vision's "runlocal" idea), not a copy.
"""

from telugu_jax.configs import lora


def get_config():
  c = lora.get_config()
  c.workdir = "runs/demo/sft"
  c.base = "runs/demo/base"
  c.model.preset = "demo"
  c.data.train = ("runs/demo/data/train.jsonl",)
  c.data.validation = ("runs/demo/data/val.jsonl",)
  c.mode = "full"
  c.data.max_seq_len = 256
  c.data.batch_size = 8
  c.data.num_packing_bins = 8
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  c.train.epochs = 10.0
  c.train.dtype = "float32"            # bf16 matmuls are emulated (slow) on most CPUs
  c.train.frozen_dtype = "float32"
  c.train.log_every = 10
  c.train.eval_every = 20
  c.train.save_every = 20
  return c
