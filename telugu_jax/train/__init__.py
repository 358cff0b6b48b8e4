"""Supervised fine-tuning (LoRA or full) and continued pretraining: `python -m telugu_jax.train --config ...`."""
