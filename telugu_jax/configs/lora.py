"""LoRA SFT of the 300M base: the plan's recommendation.

    python -m telugu_jax.train --config configs/lora.py [--config.optim.lr=1e-4 ...]

lr 2e-4: the plan's 2e-5 is for full fine-tuning; LoRA's low-rank update starts at zero and needs
roughly 10x the learning rate to move as far.
"""

import ml_collections

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.objective = "sft"                  # "sft" (SFT or pretraining) | "dpo" (configs/dpo.py)
  c.workdir = "runs/lora"
  c.base = "checkpoints/base"          # a model directory (python -m telugu_jax.convert ...)
  c.tokenizer = ""                     # default: the base's tokenizer/
  c.mode = "lora"                      # "lora" | "full"
  c.resume = True                      # continue from WORKDIR/checkpoints when present

  c.model = ml_collections.ConfigDict()
  c.model.preset = "300m"              # only used when training from scratch (no base)

  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.05
  c.lora.targets = LORA_TARGETS
  c.lora.rslora = False

  c.data = ml_collections.ConfigDict()
  c.data.kind = "sft"                  # "sft" (Conversation JSONL) | "pretrain" (plain text)
  c.data.train = ("data/sft/train.jsonl",)
  c.data.validation = ("data/sft/val.jsonl",)
  c.data.max_seq_len = 1024
  c.data.batch_size = 32               # global rows per optimiser step (grad_accum microbatches together)
  c.data.packing = True
  c.data.num_packing_bins = 16
  c.data.seed = 0

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.lr = 2e-4
  c.optim.warmup_steps = 100
  c.optim.end_lr_ratio = 0.1
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.clip_norm = 1.0
  c.optim.decay_embeddings = False

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 3.0
  c.train.max_steps = -1               # > 0 overrides epochs
  c.train.grad_accum = 1
  c.train.dtype = "bfloat16"           # activations / matmuls
  c.train.frozen_dtype = "bfloat16"    # the frozen base in LoRA runs: half the memory
  c.train.remat = False
  c.train.z_loss = 0.0
  c.train.attention = "auto"           # auto: cuDNN flash attention on NVIDIA GPUs in bf16, else XLA ("xla"|"cudnn")
  c.train.attention_block = -1         # -1 auto: causal query blocks on a CPU (skip the masked half); 0 one pass; N
  c.train.loss_chunk = 0               # > 0: output projection + loss this many tokens at a time (no full logits)
  c.train.seed = 0
  c.train.log_every = 10
  c.train.eval_every = 200
  c.train.save_every = 200
  c.train.keep_latest = 2
  c.train.keep_best = 1
  c.train.patience = 0                 # early stopping after this many evaluations without improvement (0: off)
  c.train.min_delta = 0.0
  c.train.export = "best"              # WORKDIR/model: "best" checkpoint by validation loss | "last" state
  c.train.async_checkpoint = True
  c.train.peak_tflops = 0.0            # per device, for MFU; 0: look up the device kind
  c.train.sample_every = 0             # greedy answers to sample_prompts every N steps (0: off) -> samples.jsonl
  c.train.sample_prompts = ("తెలుగు భాష గురించి రెండు వాక్యాలు చెప్పండి.", "ఆరోగ్యంగా ఉండటానికి మూడు చిట్కాలు ఇవ్వండి.",
                            "ఈ వాక్యాన్ని తెలుగులోకి అనువదించండి: I like to read books.")

  # The chat template (telugu_jax/chat_format.py): <bos>{user}{sep}u1{turn_sep}{assistant}{sep}a1<eos>. It is
  # recorded in WORKDIR/model/model.json, and chat, serve, evaluate, DPO and export read it from there. A
  # tokenizer that turns "\n" into a space (sentencepiece's default nmt_nfkc) needs --config.chat.turn_sep=" ";
  # `python -m telugu_jax.tokenizer inspect TOKENIZER` says which template a tokenizer keeps. Left at these
  # defaults, a run uses the template its base records.
  c.chat = ml_collections.ConfigDict()
  c.chat.user = "user:"
  c.chat.assistant = "assistant:"
  c.chat.sep = " "
  c.chat.turn_sep = "\n"

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)            # (data, fsdp, tensor); -1 takes the remaining devices
  c.mesh.devices = 0                   # use the first N devices (0: all)
  return c
