"""Build random Hugging Face Llama models and copy their weights into our layout, by hand.

This is deliberately independent of `telugu_jax.convert`: the model tests must not trust the code
that a later test checks.
"""

import numpy as np
import torch
import transformers

from telugu_jax.model import LlamaConfig


def make_hf_llama(seed=0, std=0.2, **kw):
  """A random HF LlamaForCausalLM in float32 with weights ~N(0, std) (norm scales ~1 + N(0, std))."""
  cfg = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
             num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
             rms_norm_eps=1e-5, tie_word_embeddings=False)
  cfg.update(kw)
  torch.manual_seed(seed)
  hf_cfg = transformers.LlamaConfig(**cfg)
  model = transformers.LlamaForCausalLM(hf_cfg).eval().float()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + std * torch.randn_like(p))
      else:
        p.copy_(std * torch.randn_like(p))
  return model


def hf_to_variables(model) -> dict:
  """Our `params` tree from a HF model's state dict (kernels are [in, out]: transpose)."""
  sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  n_layers = model.config.num_hidden_layers
  params = {"embed_tokens": {"embedding": sd["model.embed_tokens.weight"]},
            "norm": {"scale": sd["model.norm.weight"]}}
  if not model.config.tie_word_embeddings:
    params["lm_head"] = sd["lm_head.weight"].T
  for i in range(n_layers):
    p = f"model.layers.{i}."
    params[f"layers_{i}"] = {
        "input_layernorm": {"scale": sd[p + "input_layernorm.weight"]},
        "post_attention_layernorm": {"scale": sd[p + "post_attention_layernorm.weight"]},
        "self_attn": {n: {"kernel": sd[p + f"self_attn.{n}.weight"].T}
                      for n in ("q_proj", "k_proj", "v_proj", "o_proj")},
        "mlp": {n: {"kernel": sd[p + f"mlp.{n}.weight"].T} for n in ("gate_proj", "up_proj", "down_proj")},
    }
  return {"params": params}


def our_config(model, **kw) -> LlamaConfig:
  return LlamaConfig.from_hf(model.config, dtype="float32", **kw)


def hf_logits(model, tokens) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.float().numpy()
