"""LoRA: zero-init is the identity, logits equal `peft`'s LoraModel, merge equals unmerged."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch

from telugu_jax.model import Llama, LoraConfig
from telugu_jax.model.lora import count_params, drop_lora, join_variables, merge_lora, split_variables
from tests.model.hf_reference import hf_logits, hf_to_variables, make_hf_llama, our_config

TOKENS = np.array([[5, 17, 3, 88, 42, 7, 61, 29, 11, 96], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


def _with_lora(variables, model, seed=0):
  lora = model.init_variables(jax.random.key(seed))["lora"]
  return {**variables, "lora": lora}


def _randomise_lora(lora, seed=1, std=0.2):
  leaves, tree = jax.tree_util.tree_flatten(lora)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [std * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
  return jax.tree_util.tree_unflatten(tree, new)


def test_fresh_adapter_is_bit_identical_to_base():
  ref = make_hf_llama()
  cfg = our_config(ref)
  base_vars = hf_to_variables(ref)
  lcfg = LoraConfig(rank=4, alpha=8.0)
  model = Llama(cfg, lora=lcfg)
  variables = _with_lora(base_vars, model)
  assert set(variables) == {"params", "lora"}
  assert all(np.all(np.asarray(b) == 0) for b in jax.tree_util.tree_leaves(variables["lora"])[1::2])
  np.testing.assert_array_equal(np.asarray(model.apply(variables, TOKENS)),
                                np.asarray(Llama(cfg).apply(base_vars, TOKENS)))


@pytest.mark.parametrize("rslora", [False, True])
def test_logits_match_peft(rslora):
  ref = make_hf_llama()
  cfg = our_config(ref)
  lcfg = LoraConfig(rank=4, alpha=12.0, targets=("q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"),
                    rslora=rslora)
  model = Llama(cfg, lora=lcfg)
  variables = _with_lora(hf_to_variables(ref), model)
  variables["lora"] = _randomise_lora(variables["lora"], std=0.1)

  pcfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=list(lcfg.targets), lora_dropout=0.0,
                         use_rslora=rslora)
  pmodel = peft.get_peft_model(ref, pcfg).eval()
  with torch.no_grad():
    for i, layer in enumerate(pmodel.base_model.model.model.layers):
      ours = variables["lora"][f"layers_{i}"]
      for block, names in (("self_attn", ("q_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "down_proj"))):
        for n in names:
          mod = getattr(getattr(layer, block), n)
          mod.lora_A["default"].weight.copy_(torch.tensor(np.asarray(ours[block][n]["lora_a"]).T))
          mod.lora_B["default"].weight.copy_(torch.tensor(np.asarray(ours[block][n]["lora_b"]).T))
  expected = hf_logits(pmodel, TOKENS)
  got = np.asarray(model.apply(variables, TOKENS))
  chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)
  with pmodel.disable_adapter():
    base = hf_logits(pmodel, TOKENS)
  assert np.abs(expected - base).max() > 1e-2  # the adapter really changes the output

  # Adapter off (a module flag) gives the base model; merged weights give the adapted model.
  off = np.asarray(Llama(cfg, lora=lcfg, lora_enabled=False).apply(variables, TOKENS))
  chex.assert_trees_all_close(off, base, atol=1e-5, rtol=1e-5)
  merged = merge_lora(variables["params"], variables["lora"], lcfg)
  chex.assert_trees_all_close(np.asarray(Llama(cfg).apply({"params": merged}, TOKENS)), got,
                              atol=1e-5, rtol=1e-5)


def test_split_join_and_counts():
  cfg = our_config(make_hf_llama())
  lcfg = LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "up_proj"))
  variables = Llama(cfg, lora=lcfg).init_variables(jax.random.key(0))
  trainable, frozen = split_variables(variables, "lora")
  assert set(trainable) == {"lora"} and set(frozen) == {"params"}
  # q_proj: 48 -> 48 (6 heads x 8), up_proj: 48 -> 80; two layers.
  assert count_params(trainable) == 2 * (2 * (48 + 48) + 2 * (48 + 80))
  assert count_params(frozen) == cfg.num_params()
  assert join_variables(trainable, frozen).keys() == variables.keys()
  full_t, full_f = split_variables(drop_lora(variables), "full")
  assert set(full_t) == {"params"} and full_f == {}
  with pytest.raises(ValueError, match="no 'lora' collection"):
    split_variables(drop_lora(variables), "lora")
  with pytest.raises(ValueError, match="unknown LoRA targets"):
    LoraConfig(targets=("qkv",))


def test_bf16_merge_warns_when_update_rounds_away():
  cfg = our_config(make_hf_llama())
  lcfg = LoraConfig(rank=2, alpha=2.0, targets=("q_proj",))
  variables = Llama(cfg, lora=lcfg).init_variables(jax.random.key(0))
  params16 = jax.tree_util.tree_map(lambda x: (x + 1.0).astype(jnp.bfloat16), variables["params"])
  tiny_lora = _randomise_lora(variables["lora"], std=1e-3)
  with pytest.warns(UserWarning, match="merge into float32"):
    merge_lora(params16, tiny_lora, lcfg)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    merge_lora(variables["params"], tiny_lora, lcfg)  # float32: no warning


def test_init_lora_without_tracing_the_model():
  """`init_lora` (what the trainer uses) gives the tree, shapes and dtypes of `init_variables()["lora"]`,
  B = 0 (so the adapted model is bit-identical to the base), and A drawn as PEFT does: U(-1/sqrt(in), +)."""
  from telugu_jax.model.lora import init_lora

  ref = make_hf_llama()
  cfg = our_config(ref)
  model = Llama(cfg, lora=LoraConfig(rank=8, alpha=16.0))
  abstract = jax.eval_shape(model.init_variables, jax.random.key(0))["lora"]
  lora = init_lora(abstract, jax.random.key(1))
  assert jax.tree_util.tree_structure(lora) == jax.tree_util.tree_structure(abstract)
  chex.assert_trees_all_equal_shapes_and_dtypes(lora, abstract)
  flat = jax.tree_util.tree_flatten_with_path(lora)[0]
  a_leaves = [np.asarray(x) for p, x in flat if p[-1].key == "lora_a"]
  assert all(np.all(np.asarray(x) == 0) for p, x in flat if p[-1].key == "lora_b")
  for a in a_leaves:
    bound = 1 / np.sqrt(a.shape[0])
    assert np.abs(a).max() <= bound and a.std() == pytest.approx(bound / np.sqrt(3), rel=0.25)
  assert len({a.ravel()[:8].tobytes() for a in a_leaves}) == len(a_leaves)  # a key per leaf
  base = hf_to_variables(ref)
  np.testing.assert_array_equal(np.asarray(model.apply({**base, "lora": lora}, TOKENS)),
                                np.asarray(Llama(cfg).apply(base, TOKENS)))
