"""The model: config presets, the Flax LLaMA, LoRA adapters and the KV cache."""

from telugu_jax.model.cache import KVCache
from telugu_jax.model.config import LlamaConfig, RopeScaling
from telugu_jax.model.llama import Llama
from telugu_jax.model.lora import LoraConfig

__all__ = ["KVCache", "Llama", "LlamaConfig", "LoraConfig", "RopeScaling"]
