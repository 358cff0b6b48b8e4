"""Shared fixtures for the conversion tests: one random HF Llama (weights at std 0.2) saved once per
module, and a jitted forward pass per config so each architecture compiles once."""

import functools

import jax
import numpy as np
import pytest
import torch

from telugu_jax.model import Llama
from tests.model.hf_reference import make_hf_llama

# Vocabulary just above the session sentencepiece tokenizer's 420 pieces (odd, so a transpose can't hide).
VOCAB = 431
TOKENS = np.array([[5, 17, 3, 88, 42, 7, 61, 29, 11, 96, 0, 54, 33, 429, 400]])


@functools.cache
def _forward(config, lora_config):
  model = Llama(config.replace(dtype="float32"), lora=lora_config)
  return jax.jit(model.apply)


def our_logits(loaded, tokens=TOKENS, *, lora: bool = True) -> np.ndarray:
  """float32 logits of a LoadedModel (with its adapter when it has one and `lora`)."""
  variables = loaded.variables if lora else {"params": loaded.variables["params"]}
  lcfg = loaded.lora_config if lora and "lora" in loaded.variables else None
  variables = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), variables)
  return np.asarray(_forward(loaded.config, lcfg)(variables, tokens))


def random_variables(config, lora_config=None, seed=0, std=0.1) -> dict:
  """Variables of the model's shapes drawn with numpy (no Flax init: un-jitted init compiles op by op)."""
  shapes = jax.eval_shape(lambda: Llama(config, lora=lora_config).init_variables(jax.random.key(0)))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: (std * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def torch_logits(model, tokens=TOKENS) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.fixture(scope="module")
def hf_ref():
  return make_hf_llama(seed=0, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def hf_dir(hf_ref, tmp_path_factory, sp_tokenizer):
  """The reference model as a Hugging Face folder (model.safetensors + config.json + tokenizer.model)."""
  d = tmp_path_factory.mktemp("hf")
  hf_ref.save_pretrained(d)
  sp_tokenizer.save(d)
  return d


@pytest.fixture(scope="module")
def converted(hf_dir, tmp_path_factory):
  """hf_dir converted to a telugu-jax model directory (float32)."""
  from telugu_jax.convert import convert

  return convert(hf_dir, tmp_path_factory.mktemp("conv") / "model", log=lambda s: None)
