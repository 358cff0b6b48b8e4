"""Model architecture as a frozen dataclass, with named presets and a two-way Hugging Face mapping.

The architecture is data, not code: a preset is a named constructor (`LlamaConfig.tiny()`), a Hugging
Face `config.json` maps in with `from_hf` and back out with `to_hf`. The ConfigDict of a training run
names a preset once and is converted here, at the edge.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style frequency scaling (HF `rope_type: llama3`)."""

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int = 32000
  d_model: int = 1024
  n_layers: int = 24
  n_heads: int = 16
  n_kv_heads: int = 4
  head_dim: int = 64
  ffn_dim: int = 2816
  rms_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_seq_len: int = 2048
  tie_embeddings: bool = False
  # Activations and matmuls run in `dtype`; parameters are stored in `param_dtype`. Norm statistics,
  # softmax and logits are always float32.
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  # Rematerialise each layer's activations in the backward pass (saves memory, costs ~1/3 more FLOPs).
  remat: bool = False
  # Attention kernel for full-sequence passes (training, prefill): "xla" (any backend) or "cudnn"
  # (fused flash attention on NVIDIA GPUs, bf16/fp16 only). Decoding with a KV cache always uses "xla".
  attention: str = "xla"
  # XLA path without a cache: queries in blocks of this many tokens, each attending only to the keys
  # up to its end (skips the masked upper triangle; llama.blocked_causal_attention). 0: one [T, T] pass.
  attention_block: int = 0

  def __post_init__(self):
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in DTYPES:
        raise ValueError(f"{field}={getattr(self, field)!r}; choose one of {sorted(DTYPES)}")
    if self.attention not in ("xla", "cudnn"):
      raise ValueError(f"attention={self.attention!r}; choose 'xla' or 'cudnn'")
    if self.attention_block < 0:
      raise ValueError(f"attention_block={self.attention_block}; use 0 (off) or a block size in tokens")
    if self.attention == "cudnn" and self.dtype == "float32":
      raise ValueError("attention='cudnn' runs in bfloat16 or float16 only; "
                       "set dtype='bfloat16' or use attention='xla'")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes) -> LlamaConfig:
    return dataclasses.replace(self, **changes)

  # ---- presets --------------------------------------------------------------------------------
  @classmethod
  def tiny(cls, **kw) -> LlamaConfig:
    """Tests: odd sizes so a wrong transpose or head split cannot pass by symmetry."""
    base = dict(vocab_size=97, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=8, ffn_dim=80,
                max_seq_len=128, dtype="float32")
    return cls(**{**base, **kw})

  @classmethod
  def smoke(cls, **kw) -> LlamaConfig:
    """~0.25M parameters: the test suite's shared end-to-end run."""
    base = dict(vocab_size=512, d_model=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, ffn_dim=256,
                max_seq_len=256, tie_embeddings=True, dtype="float32")
    return cls(**{**base, **kw})

  @classmethod
  def demo(cls, **kw) -> LlamaConfig:
    """~5M parameters: the CPU demo trains this from scratch in minutes."""
    base = dict(vocab_size=2048, d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=32, ffn_dim=768,
                max_seq_len=512, tie_embeddings=True, dtype="float32")
    return cls(**{**base, **kw})

  @classmethod
  def llama_300m(cls, **kw) -> LlamaConfig:
    """The plan's base: d 1024, 24 layers, 16 heads (4 KV heads), 32K vocab, ~340M parameters."""
    base = dict(vocab_size=32000, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=4, head_dim=64,
                ffn_dim=2816, max_seq_len=2048)
    return cls(**{**base, **kw})

  @classmethod
  def preset(cls, name: str, **kw) -> LlamaConfig:
    presets = {"tiny": cls.tiny, "smoke": cls.smoke, "demo": cls.demo, "300m": cls.llama_300m}
    if name not in presets:
      raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
    return presets[name](**kw)

  # ---- counting -------------------------------------------------------------------------------
  def num_params(self) -> int:
    d, h = self.d_model, self.head_dim
    attn = d * h * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * h * d
    mlp = 3 * d * self.ffn_dim
    per_layer = attn + mlp + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.n_layers * per_layer + embed + d

  # ---- Hugging Face ---------------------------------------------------------------------------
  @classmethod
  def from_hf(cls, hf: Any, **overrides) -> LlamaConfig:
    """From a HF Llama config: a `transformers.LlamaConfig`, a dict, or a path to `config.json`.

    Reads both generations of the format: transformers 5.x keeps rope settings in
    `rope_parameters`; older files have `rope_theta` and `rope_scaling`.
    """
    if isinstance(hf, str | os.PathLike):
      path = os.path.join(hf, "config.json") if os.path.isdir(hf) else hf
      with open(path) as f:
        hf = json.load(f)
    elif not isinstance(hf, dict):
      hf = hf.to_dict()
    model_type = hf.get("model_type", "llama")
    if model_type not in ("llama", "mistral"):
      raise ValueError(f"config model_type is {model_type!r}; only Llama-architecture models are supported")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
      raise ValueError("attention_bias/mlp_bias models are not supported (Llama has no biases)")
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"hidden_act={hf['hidden_act']!r}; only silu (SwiGLU) is supported")
    rope = dict(hf.get("rope_parameters") or {})
    if not rope:
      rope = dict(hf.get("rope_scaling") or {})
      if "rope_theta" in hf:
        rope["rope_theta"] = hf["rope_theta"]
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
      scaling = RopeScaling(factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
                            high_freq_factor=float(rope["high_freq_factor"]),
                            original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
    elif rope_type != "default":
      raise ValueError(f"rope_type {rope_type!r} is not supported (default and llama3 are)")
    n_heads = hf["num_attention_heads"]
    d_model = hf["hidden_size"]
    dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    kw = dict(
        vocab_size=hf["vocab_size"], d_model=d_model, n_layers=hf["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or d_model // n_heads, ffn_dim=hf["intermediate_size"],
        rms_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(rope.get("rope_theta", 10000.0)),
        rope_scaling=scaling, max_seq_len=hf.get("max_position_embeddings", 2048),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        param_dtype=dtype if dtype in DTYPES else "float32")
    kw.update(overrides)
    return cls(**kw)

  def to_hf(self, **extra) -> dict:
    """A dict that `transformers.LlamaConfig(**d)` accepts (both 4.x and 5.x read these keys)."""
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
    if self.rope_scaling is not None:
      rope = {"rope_type": "llama3", "rope_theta": self.rope_theta,
              **dataclasses.asdict(self.rope_scaling)}
    out = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": self.vocab_size, "hidden_size": self.d_model, "num_hidden_layers": self.n_layers,
        "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
        "head_dim": self.head_dim, "intermediate_size": self.ffn_dim, "rms_norm_eps": self.rms_eps,
        "rope_parameters": rope, "rope_theta": self.rope_theta,
        "rope_scaling": None if self.rope_scaling is None else rope,
        "max_position_embeddings": self.max_seq_len, "tie_word_embeddings": self.tie_embeddings,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "dtype": self.param_dtype,
    }
    out.update(extra)
    return out

  # ---- our own serialisation ------------------------------------------------------------------
  def to_dict(self) -> dict:
    # The attention kernel is a choice of the machine that runs the model, not part of the model: a run
    # trained with cuDNN on a GPU must load for chat on a CPU.
    d = dataclasses.asdict(self)
    d.pop("attention")
    d.pop("attention_block")
    return d

  @classmethod
  def from_dict(cls, d: dict) -> LlamaConfig:
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown LlamaConfig fields {sorted(unknown)}")
    if d.get("rope_scaling") is not None:
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)
