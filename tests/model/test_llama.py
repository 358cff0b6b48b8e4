"""The Flax LLaMA against Hugging Face `LlamaForCausalLM` built from the same random weights."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from telugu_jax.model import Llama, LlamaConfig
from telugu_jax.model.llama import positions_from_segments
from tests.model.hf_reference import hf_logits, hf_to_variables, make_hf_llama, our_config

TOKENS = np.array([[5, 17, 3, 88, 42, 7, 61, 29, 11, 96, 0, 54, 33]])


@pytest.mark.parametrize(
    "hf_kw",
    [
        pytest.param(dict(num_key_value_heads=6), id="mha"),
        pytest.param(dict(num_key_value_heads=2), id="gqa"),
        pytest.param(dict(num_key_value_heads=1, tie_word_embeddings=True), id="mqa-tied"),
        pytest.param(dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), id="theta5e5"),
        pytest.param(dict(rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16}), id="llama3-scaling"),
    ],
)
def test_logits_match_transformers(hf_kw):
  ref = make_hf_llama(**hf_kw)
  cfg = our_config(ref)
  if "rope_parameters" in hf_kw:
    assert cfg.rope_theta == hf_kw["rope_parameters"]["rope_theta"]
  logits = Llama(cfg).apply(hf_to_variables(ref), jnp.asarray(TOKENS))
  expected = hf_logits(ref, TOKENS)
  assert np.abs(expected).max() > 1.0  # weights at std 0.2 give logits far from zero
  chex.assert_trees_all_close(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)


def test_wrong_rope_theta_is_detected():
  """The tolerance above is tight enough that a wrong theta fails it (why weights are drawn at 0.2)."""
  ref = make_hf_llama(rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
  wrong = our_config(ref).replace(rope_theta=10000.0)
  logits = Llama(wrong).apply(hf_to_variables(ref), jnp.asarray(TOKENS))
  assert np.abs(np.asarray(logits) - hf_logits(ref, TOKENS)).max() > 1e-3


def test_packed_rows_equal_separate_runs():
  ref = make_hf_llama(num_key_value_heads=2)
  cfg = our_config(ref)
  model, variables = Llama(cfg), hf_to_variables(ref)
  a, b = np.array([4, 9, 13, 22, 8]), np.array([70, 3, 31, 5, 19, 2, 44])
  row = np.concatenate([a, b, [0, 0, 0]])[None]
  seg = np.array([[1] * 5 + [2] * 7 + [0] * 3])
  pos = np.array([list(range(5)) + list(range(7)) + [0, 0, 0]])
  packed = np.asarray(model.apply(variables, row, positions=pos, segment_ids=seg))
  alone_a = np.asarray(model.apply(variables, a[None]))
  alone_b = np.asarray(model.apply(variables, b[None]))
  chex.assert_trees_all_close(packed[0, :5], alone_a[0], atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(packed[0, 5:12], alone_b[0], atol=1e-5, rtol=1e-5)
  assert np.isfinite(packed).all()  # padding rows attend to nothing real but stay finite
  # Default positions are derived from the segment ids.
  same = np.asarray(model.apply(variables, row, segment_ids=seg))
  chex.assert_trees_all_close(same[0, :12], packed[0, :12], atol=1e-6)


def test_positions_from_segments():
  seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [5, 5, 5, 5, 5, 5, 5, 5]])
  np.testing.assert_array_equal(positions_from_segments(seg),
                                [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])


def test_bf16_compute_close_to_fp32():
  ref = make_hf_llama(std=0.05)
  cfg = our_config(ref)
  variables = hf_to_variables(ref)
  f32 = np.asarray(Llama(cfg).apply(variables, TOKENS))
  b16 = Llama(cfg.replace(dtype="bfloat16")).apply(variables, TOKENS)
  assert b16.dtype == jnp.float32  # logits always float32
  assert np.abs(np.asarray(b16) - f32).max() < 0.1 * np.abs(f32).max()


def test_presets_and_hf_config_round_trip():
  import transformers

  cfg = LlamaConfig.llama_300m()
  n = cfg.num_params()
  assert 300e6 <= n <= 340e6, n
  demo = LlamaConfig.demo().num_params()
  assert 4.5e6 <= demo <= 10e6, demo
  for c in (cfg, LlamaConfig.tiny(tie_embeddings=True), LlamaConfig.demo()):
    hf = transformers.LlamaConfig(**c.to_hf())
    back = LlamaConfig.from_hf(hf, dtype=c.dtype, param_dtype=c.param_dtype)
    assert back == c.replace(remat=False)
  # The parameter count formula agrees with the initialised pytree.
  tiny = LlamaConfig.tiny()
  shapes = jax.eval_shape(lambda: Llama(tiny).init_variables(jax.random.key(0)))
  assert sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)) == tiny.num_params()


def test_config_reads_older_hf_files():
  old = {"model_type": "llama", "vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
         "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "rope_theta": 250000.0,
         "rope_scaling": None, "torch_dtype": "bfloat16", "max_position_embeddings": 64}
  cfg = LlamaConfig.from_hf(old)
  assert cfg.rope_theta == 250000.0 and cfg.param_dtype == "bfloat16" and cfg.head_dim == 8
  with pytest.raises(ValueError, match="rope_type 'yarn'"):
    LlamaConfig.from_hf({**old, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
  with pytest.raises(ValueError, match="multiple of n_kv_heads"):
    LlamaConfig.tiny(n_kv_heads=4)


def test_attention_kernel_is_a_runtime_choice():
  """`attention="cudnn"` is validated up front (it runs in half precision only) and is not written into a
  saved model's config, so a run trained with cuDNN on a GPU loads for chat on a CPU. (The cuDNN kernel
  itself is compared with the XLA path on a GPU by scripts/check_gpu.py; CI has no GPU.)"""
  with pytest.raises(ValueError, match="bfloat16 or float16 only"):
    LlamaConfig.tiny(dtype="float32", attention="cudnn")
  with pytest.raises(ValueError, match="choose 'xla' or 'cudnn'"):
    LlamaConfig.tiny(attention="flash")
  cfg = LlamaConfig.tiny(dtype="bfloat16", attention="cudnn")
  assert "attention" not in cfg.to_dict()
  assert LlamaConfig.from_dict(cfg.to_dict()) == cfg.replace(attention="xla")


@pytest.mark.parametrize("block", [4, 5, 64])
def test_blocked_causal_attention_matches_transformers_and_packing(block):
  """`attention_block` (query blocks that skip the masked upper triangle) computes the same function:
  logits == transformers at 1e-5 (blocks of 4 and 5 over 13 tokens: a short last block too), and
  packed examples stay apart (segment masks inside each block)."""
  ref = make_hf_llama(num_key_value_heads=2)
  cfg = our_config(ref).replace(attention_block=block)
  model, variables = Llama(cfg), hf_to_variables(ref)
  chex.assert_trees_all_close(np.asarray(model.apply(variables, jnp.asarray(TOKENS))), hf_logits(ref, TOKENS),
                              atol=1e-5, rtol=1e-5)
  a, b = np.array([4, 9, 13, 22, 8]), np.array([70, 3, 31, 5, 19, 2, 44])
  row = np.concatenate([a, b, [0, 0, 0]])[None]
  seg = np.array([[1] * 5 + [2] * 7 + [0] * 3])
  packed = np.asarray(model.apply(variables, row, segment_ids=seg))
  chex.assert_trees_all_close(packed[0, 5:12], np.asarray(Llama(cfg).apply(variables, b[None]))[0],
                              atol=1e-5, rtol=1e-5)
  assert np.isfinite(packed).all()
