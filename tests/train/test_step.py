"""Train step math: the loss normalisation, gradient accumulation, what trains, sharding invariance."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding

from telugu_jax.model import Llama, LlamaConfig, LoraConfig
from telugu_jax.model.lora import split_variables
from telugu_jax.train import sharding as sh
from telugu_jax.train.loss import loss_fn, loss_sums
from telugu_jax.train.optim import decay_mask, make_optimizer
from telugu_jax.train.step import create_state, grads_and_stats, train_step

CFG = LlamaConfig.tiny()
LCFG = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "up_proj", "down_proj"))


def make_batch(rows=8, length=24, seed=0):
  """Packed rows with very different numbers of loss tokens per row (1 .. ~20)."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32)
  targets = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32)
  seg = np.zeros((rows, length), np.int32)
  pos = np.zeros((rows, length), np.int32)
  mask = np.zeros((rows, length), np.int32)
  for r in range(rows):
    cut = rng.integers(4, length - 4)
    used = length - rng.integers(0, 4)
    seg[r, :cut], seg[r, cut:used] = 1, 2
    pos[r, :cut], pos[r, cut:used] = np.arange(cut), np.arange(used - cut)
    n_loss = 1 if r % 3 == 0 else rng.integers(2, used - 2)
    mask[r, used - n_loss:used] = 1
  return {"inputs": inputs, "targets": targets, "loss_mask": mask, "segment_ids": seg, "positions": pos}


def lora_variables(seed=0):
  """LoRA variables with B != 0 (with B = 0 the gradient of A is zero and would go untested)."""
  variables = Llama(CFG, lora=LCFG).init_variables(jax.random.key(seed))
  leaves, tree = jax.tree_util.tree_flatten(variables["lora"])
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  variables["lora"] = jax.tree_util.tree_unflatten(
      tree, [0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])
  return variables


def optim_cfg(**kw):
  c = ml_collections.ConfigDict(dict(name="adamw", lr=1e-2, warmup_steps=0, end_lr_ratio=1.0, weight_decay=0.01,
                                     b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0, decay_embeddings=False))
  c.update(kw)
  return c


def test_loss_is_mean_over_loss_tokens_of_whole_batch():
  model = Llama(CFG)
  variables = model.init_variables(jax.random.key(0))
  batch = make_batch()
  loss, aux = loss_fn(model, {"params": variables["params"]}, {}, batch, None)
  logits = np.asarray(model.apply(variables, batch["inputs"], positions=batch["positions"],
                                  segment_ids=batch["segment_ids"]), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  expected = (nll * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(aux["tokens"]) == batch["loss_mask"].sum()
  # Not the mean of per-row means (rows hold 1 .. 20 loss tokens, so the two differ).
  per_row = (nll * batch["loss_mask"]).sum(1) / batch["loss_mask"].sum(1)
  assert abs(per_row.mean() - expected) > 1e-3


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_grad_accumulation_equals_one_big_batch(mode):
  model = Llama(CFG, lora=LCFG if mode == "lora" else None)
  variables = lora_variables() if mode == "lora" else Llama(CFG).init_variables(jax.random.key(0))
  trainable, frozen = split_variables(variables, mode)
  batch = make_batch(rows=8)
  rng = jax.random.key(0)
  run = jax.jit(functools.partial(grads_and_stats, model), static_argnames="accum")
  loss1, g1, s1 = run(trainable, frozen, batch, rng, accum=1)
  loss4, g4, s4 = run(trainable, frozen, batch, rng, accum=4)
  assert float(s1["tokens"]) == float(s4["tokens"]) == batch["loss_mask"].sum()
  np.testing.assert_allclose(float(loss4), float(loss1), rtol=1e-5)
  chex.assert_trees_all_close(g4, g1, rtol=1e-5, atol=1e-7)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(g1))  # every leaf gets gradient

  # The same parameters after a few SGD steps (Adam's sign-like first step would amplify noise).
  tx, _ = make_optimizer(optim_cfg(name="sgd", lr=0.5), 10)
  s_a = create_state(trainable, frozen, tx, jax.random.key(1))
  s_b = s_a
  step1 = jax.jit(functools.partial(train_step, model=model, tx=tx, accum=1))
  step4 = jax.jit(functools.partial(train_step, model=model, tx=tx, accum=4))
  for i in range(3):
    b = make_batch(rows=8, seed=10 + i)
    s_a, m_a = step1(s_a, b)
    s_b, m_b = step4(s_b, b)
    np.testing.assert_allclose(float(m_b["loss"]), float(m_a["loss"]), rtol=1e-5)
  chex.assert_trees_all_close(s_b.trainable, s_a.trainable, rtol=1e-5, atol=1e-6)


def test_masked_targets_do_not_matter():
  model = Llama(CFG, lora=LCFG)
  trainable, frozen = split_variables(lora_variables(), "lora")
  batch = make_batch()
  other = dict(batch)
  rng = np.random.default_rng(5)
  other["targets"] = np.where(batch["loss_mask"] == 1, batch["targets"],
                              rng.integers(3, CFG.vocab_size, batch["targets"].shape)).astype(np.int32)
  assert (other["targets"] != batch["targets"]).sum() > 50
  run = jax.jit(functools.partial(grads_and_stats, model))
  l_a, g_a, _ = run(trainable, frozen, batch, jax.random.key(0))
  l_b, g_b, _ = run(trainable, frozen, other, jax.random.key(0))
  assert float(l_a) == float(l_b)
  chex.assert_trees_all_equal(g_a, g_b)


def test_lora_leaves_base_untouched_and_full_changes_it():
  batch = make_batch()
  variables = Llama(CFG, lora=LCFG).init_variables(jax.random.key(0))  # fresh adapter, B = 0
  tx, _ = make_optimizer(optim_cfg(), 10)
  trainable, frozen = split_variables(variables, "lora")
  state = create_state(trainable, frozen, tx, jax.random.key(1))
  step = jax.jit(functools.partial(train_step, model=Llama(CFG, lora=LCFG), tx=tx))
  for _ in range(3):
    state, _ = step(state, batch)
  chex.assert_trees_all_equal(state.frozen["params"], variables["params"])
  assert not np.allclose(state.trainable["lora"]["layers_0"]["self_attn"]["q_proj"]["lora_b"], 0)

  full_t, full_f = split_variables({"params": variables["params"]}, "full")
  fstate = create_state(full_t, full_f, tx, jax.random.key(1))
  fstep = jax.jit(functools.partial(train_step, model=Llama(CFG), tx=tx))
  fstate, _ = fstep(fstate, batch)
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                   fstate.trainable["params"], variables["params"])
  assert all(jax.tree_util.tree_leaves(changed))


def test_weight_decay_mask():
  params = Llama(CFG).init_variables(jax.random.key(0))["params"]
  mask = decay_mask(params)
  assert mask["layers_0"]["self_attn"]["q_proj"]["kernel"] is True
  assert mask["layers_0"]["input_layernorm"]["scale"] is False and mask["norm"]["scale"] is False
  assert mask["embed_tokens"]["embedding"] is False and mask["lm_head"] is False
  assert decay_mask(params, decay_embeddings=True)["embed_tokens"]["embedding"] is True


@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (2, 4, 1)],
                         ids=["data8", "fsdp8", "mixed222", "data2-fsdp4"])
def test_meshes_give_single_device_losses(shape):
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set in tests/conftest.py)")
  tx, _ = make_optimizer(optim_cfg(lr=1e-2), 10)
  variables = lora_variables()
  trainable, frozen = split_variables(variables, "lora")
  model = Llama(CFG, lora=LCFG)
  batches = [make_batch(rows=8, seed=20 + i) for i in range(3)]

  def run(mesh):
    state = create_state(trainable, frozen, tx, jax.random.key(1))
    shardings = sh.tree_shardings(jax.eval_shape(lambda: state), mesh)
    state = jax.device_put(state, shardings)
    step = jax.jit(functools.partial(train_step, model=model, tx=tx), in_shardings=(shardings, sh.batch_sharding(mesh)),
                   out_shardings=(shardings, None))
    losses = []
    for b in batches:
      state, m = step(state, sh.shard_batch(b, mesh))
      losses.append(float(m["loss"]))
    return losses, state

  one, _ = run(sh.make_mesh((1, 1, 1), devices=jax.devices()[:1]))
  mesh = sh.make_mesh(shape)
  many, state = run(mesh)
  np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
  if shape[1] > 1:  # fsdp really shards the frozen base
    q = state.frozen["params"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert isinstance(q.sharding, NamedSharding) and q.sharding.spec[0] == "fsdp"
    assert q.addressable_shards[0].data.shape[0] == q.shape[0] // shape[1]


def test_mesh_errors():
  with pytest.raises(ValueError, match="does not divide"):
    sh.make_mesh((3, -1, 1))
  with pytest.raises(ValueError, match="3 entries"):
    sh.make_mesh((1, -1))


def test_loss_sums_pretrain_mode_uses_all_real_tokens():
  model = Llama(CFG)
  variables = model.init_variables(jax.random.key(0))
  batch = make_batch()
  batch["loss_mask"] = (batch["segment_ids"] > 0).astype(np.int32)
  _, aux = loss_sums(model, {"params": variables["params"]}, {}, batch, None)
  assert float(aux["tokens"]) == (batch["segment_ids"] > 0).sum()


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_loss_equals_full_logits_loss(tie):
  """train.loss_chunk never builds [B, L, V] logits; loss, statistics and gradients must not change, with
  a chunk that does not divide B*L (padding) and with tied embeddings (the head is the embedding)."""
  cfg = CFG.replace(tie_embeddings=tie)
  model = Llama(cfg, lora=LCFG)
  variables = Llama(cfg, lora=LCFG).init_variables(jax.random.key(3))
  batch = make_batch(rows=4, length=24, seed=5)                 # 96 tokens; chunk 40 pads to 120

  def f(trainable, chunk):
    return loss_sums(model, trainable, {"lora": variables["lora"]}, batch, None, z_loss=1e-3, loss_chunk=chunk)

  (l0, a0), g0 = jax.value_and_grad(f, has_aux=True)({"params": variables["params"]}, 0)
  (l1, a1), g1 = jax.value_and_grad(f, has_aux=True)({"params": variables["params"]}, 40)
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
  for k in ("tokens", "ce_sum", "correct"):
    np.testing.assert_allclose(float(a1[k]), float(a0[k]), rtol=1e-6)
  assert float(a0["correct"]) >= 0 and float(a0["tokens"]) == batch["loss_mask"].sum()
  chex.assert_trees_all_close(g1, g0, atol=1e-6, rtol=1e-5)
  head = g0["params"]["embed_tokens"]["embedding"] if tie else g0["params"]["lm_head"]
  assert float(jnp.abs(head).max()) > 0  # the head's gradient flows through the chunked path


def test_make_steps_passes_loss_chunk_to_the_train_objective():
  from telugu_jax.train.step import make_steps

  tx = make_optimizer(optim_cfg(), 10)[0]
  train, _ = make_steps(Llama(CFG), tx, loss_chunk=16)
  assert train.keywords["objective"].sums.keywords["loss_chunk"] == 16
  train, _ = make_steps(Llama(CFG), tx)
  assert train.keywords["objective"] is None  # the default SFT objective, full logits
