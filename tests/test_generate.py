"""Generation against independent references: Hugging Face `generate` and logits processors, the model's own
full (no-cache) forward pass, and a "scripted" model whose greedy output is known by construction.

Few compiles: one random HF model per attention layout (module-scoped), one scripted model, fixed shapes.
"""

import functools

import jax
import numpy as np
import pytest
import torch
import transformers

from telugu_jax.generate import (
  Generator,
  SamplingConfig,
  _generate_device,
  _mode,
  process_logits,
  sampling_knobs,
)
from telugu_jax.model.llama import Llama
from telugu_jax.model.lora import LoraConfig
from tests.model.hf_reference import hf_to_variables, make_hf_llama, our_config

NEW = 32
PROMPT_LENGTHS = (5, 11, 23)

# ---- random HF models -----------------------------------------------------------------------------------


def _prompts(seed=0, lengths=PROMPT_LENGTHS):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 97, n).tolist() for n in lengths]


def _hf_greedy(model, prompt, new=NEW):
  out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=new, min_new_tokens=new,
                       eos_token_id=None, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
  return out.sequences[0, len(prompt):].tolist(), torch.stack(out.scores)[:, 0].float().numpy()


@functools.cache
def _case(n_kv_heads):
  """A random HF model (std 0.2 weights), ours with the same weights, and one batched greedy run."""
  model = make_hf_llama(seed=0, num_key_value_heads=n_kv_heads)
  model.generation_config.eos_token_id = None
  gen = Generator(our_config(model), hf_to_variables(model))
  prompts = _prompts()
  batch = gen.generate(prompts, SamplingConfig(max_new_tokens=NEW), eos_id=None, return_logits=True)
  return model, gen, prompts, batch


@pytest.fixture(params=[6, 2], ids=["mha", "gqa"])
def hf_case(request):
  return _case(request.param)


@pytest.fixture
def gqa_case():
  return _case(2)


def test_greedy_matches_hf_generate(hf_case):
  model, _, prompts, batch = hf_case
  for prompt, ours in zip(prompts, batch, strict=True):
    ref_ids, ref_scores = _hf_greedy(model, prompt)
    # The reference must be a meaningful target: varied tokens, and no near-tie that could flip argmax.
    top2 = np.sort(ref_scores, axis=-1)[:, -2:]
    assert len(set(ref_ids)) >= 8
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3
    assert ours.ids == ref_ids
    assert ours.finish_reason == "length"
    np.testing.assert_allclose(ours.step_logits, ref_scores, atol=1e-4, rtol=1e-4)


def test_cached_decode_logits_equal_full_forward(hf_case):
  """Every step's logits (prefill included, left-padded batch) equal one no-cache pass over the same prefix."""
  _, gen, prompts, batch = hf_case
  # One jitted no-cache pass over all rows, right-padded; pads are their own segment (id 0).
  seqs = [p + o.ids[:-1] for p, o in zip(prompts, batch, strict=True)]
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  segments = np.zeros((len(seqs), width), np.int32)
  for r, seq in enumerate(seqs):
    tokens[r, :len(seq)], segments[r, :len(seq)] = seq, 1
  full = np.asarray(jax.jit(gen.model.apply)(gen.variables, tokens, segment_ids=segments))
  worst = 0.0
  for r, (prompt, ours) in enumerate(zip(prompts, batch, strict=True)):
    steps = full[r, len(prompt) - 1:len(seqs[r])]
    assert steps.shape == ours.step_logits.shape == (NEW, 97)
    worst = max(worst, float(np.abs(steps - ours.step_logits).max()))
  print(f"cache-vs-full max |diff| = {worst:.2e}")
  assert worst <= 1e-4


def test_batch_equals_each_prompt_alone(gqa_case):
  _, gen, _, _ = gqa_case
  prompts = _prompts(seed=1, lengths=(3, 40, 17))
  greedy = SamplingConfig(max_new_tokens=NEW)
  batch = gen.generate(prompts, greedy, eos_id=None, return_logits=True)  # the fixture's compiled program
  for prompt, ours in zip(prompts, batch, strict=True):
    [alone] = gen.generate([prompt], greedy, eos_id=None)
    assert ours.ids == alone.ids
    assert len(ours.ids) == NEW


def test_compiled_once_per_shape_not_per_token(gqa_case):
  _, gen, prompts, _ = gqa_case
  s1 = SamplingConfig(max_new_tokens=NEW, temperature=0.7, top_k=20, top_p=0.9, seed=1)
  gen.generate(prompts, s1, eos_id=None)
  before = _generate_device._cache_size()
  # Other values of the same sampling mode, other prompts of the same bucket: no new program.
  for s in (SamplingConfig(max_new_tokens=NEW, temperature=1.3, top_k=5, top_p=0.5, seed=2), s1):
    out = gen.generate(_prompts(seed=3), s, eos_id=None)
    assert [len(o.ids) for o in out] == [NEW] * 3
  assert _generate_device._cache_size() == before


def test_sampling_seeds_and_top_k_1_is_greedy(gqa_case):
  _, gen, prompts, batch = gqa_case
  hot = SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_k=97, top_p=0.99, seed=7)
  a = [o.ids for o in gen.generate(prompts, hot, eos_id=None)]
  b = [o.ids for o in gen.generate(prompts, hot, eos_id=None)]
  c = [o.ids for o in gen.generate(prompts, SamplingConfig(**{**hot.__dict__, "seed": 8}), eos_id=None)]
  assert a == b and a != c
  # top_k=1 leaves one candidate whatever the temperature: must reproduce greedy decoding.
  k1 = SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_k=1, top_p=0.99, seed=7)
  assert [o.ids for o in gen.generate(prompts, k1, eos_id=None)] == [o.ids for o in batch]


def test_lora_merged_equals_on_the_fly(gqa_case):
  model, base_gen, prompts, batch = gqa_case
  cfg = base_gen.config
  lora_cfg = LoraConfig(rank=4, alpha=8.0)
  shapes = jax.eval_shape(Llama(cfg, lora=lora_cfg).init_variables, jax.random.key(1))["lora"]
  rng = np.random.default_rng(0)
  lora = jax.tree_util.tree_map(lambda x: 0.3 * rng.standard_normal(x.shape).astype(np.float32), shapes)
  full = {"params": base_gen.variables["params"], "lora": lora}
  greedy = SamplingConfig(max_new_tokens=NEW)
  merged = Generator(cfg, full, lora_config=lora_cfg, merge=True).generate(prompts, greedy, eos_id=None,
                                                                            return_logits=True)
  on_the_fly = Generator(cfg, full, lora_config=lora_cfg, merge=False).generate(prompts, greedy, eos_id=None,
                                                                                return_logits=True)
  for m, f, base in zip(merged, on_the_fly, batch, strict=True):
    np.testing.assert_allclose(m.step_logits[0], f.step_logits[0], atol=1e-4, rtol=1e-4)
    assert m.ids == f.ids
    assert m.ids != base.ids  # the adapter does something
  # Swapping in an adapter whose B is zero (no recompile) gives the base model's output back.
  live = Generator(cfg, full, lora_config=lora_cfg, merge=False)
  live.set_adapter(jax.tree_util.tree_map_with_path(
      lambda path, x: np.zeros_like(x) if path[-1].key == "lora_b" else x, lora))
  off = live.generate(prompts, greedy, eos_id=None, return_logits=True)
  assert [o.ids for o in off] == [o.ids for o in batch]


def test_repetition_penalty_matches_hf_generate(gqa_case):
  model, gen, prompts, _ = gqa_case
  ours = gen.generate(prompts, SamplingConfig(max_new_tokens=NEW, repetition_penalty=1.5), eos_id=None)
  for prompt, o in zip(prompts, ours, strict=True):
    ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                         repetition_penalty=1.5, eos_token_id=None, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True)
    top2 = np.sort(torch.stack(ref.scores)[:, 0].numpy(), axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3
    assert o.ids == ref.sequences[0, len(prompt):].tolist()


def test_host_hook_sees_every_step_and_stops_rows(gqa_case):
  _, gen, prompts, batch = gqa_case
  seen = []

  def hook(tokens, step, done):
    seen.append((int(step), tokens.tolist(), done.tolist()))
    return np.array([False, step == 4, False])

  out = gen.generate(prompts, SamplingConfig(max_new_tokens=NEW), eos_id=None, host_hook=hook)
  assert [len(o.ids) for o in out] == [NEW, 5, NEW]
  assert [o.finish_reason for o in out] == ["length", "stop", "length"]
  assert [s for s, _, _ in seen] == list(range(NEW))
  assert [o.ids for o in out] == [b.ids[:len(o.ids)] for o, b in zip(out, batch, strict=True)]
  assert [t[0] for _, t, _ in seen] == out[0].ids and seen[5][2] == [False, True, False]


def test_prompt_longer_than_context_is_a_clear_error(gqa_case):
  _, gen, _, _ = gqa_case
  with pytest.raises(ValueError, match="exceeds the model's context of 128 tokens"):
    gen.generate([[1] * 100], SamplingConfig(max_new_tokens=NEW))


# ---- sampling filters against transformers' logits processors ---------------------------------------------

@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
                                dict(temperature=0.9, top_k=12, top_p=0.6, repetition_penalty=1.4),
                                dict(temperature=0.0, repetition_penalty=0.8)])
def test_process_logits_matches_transformers(kw):
  s = SamplingConfig(**kw)
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((4, 97)).astype(np.float32) * 3
  history = rng.integers(0, 97, (4, 10))
  seen = np.zeros((4, 97), bool)
  np.put_along_axis(seen, history, True, axis=1)
  ours = np.asarray(process_logits(logits, seen, sampling_knobs(s), _mode(s)))
  ref = torch.tensor(logits)
  ids = torch.tensor(history)
  if s.repetition_penalty != 1.0:
    ref = transformers.RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(ids, ref)
  if not s.greedy:
    ref = transformers.TemperatureLogitsWarper(s.temperature)(ids, ref)
    if s.top_k:
      ref = transformers.TopKLogitsWarper(s.top_k)(ids, ref)
    if s.top_p < 1:
      ref = transformers.TopPLogitsWarper(s.top_p)(ids, ref)
  ref = ref.numpy()
  np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
  np.testing.assert_allclose(ours[np.isfinite(ours)], ref[np.isfinite(ref)], rtol=1e-6, atol=1e-6)
  assert np.isfinite(ours).sum(-1).min() >= 1


# ---- a scripted model: greedy output known by construction --------------------------------------------------

ANSWER = " సరే, చెప్పండి."        # what the scripted model says after "assistant:"
SECOND = " నమస్కారం!"             # what it says after a prompt ending in "ది", followed by <eos>


def scripted_variables(config, successors: dict[int, int], seed: int = 0) -> dict:
  """Weights whose greedy next token after `t` is `successors[t]`.

  Attention and MLP outputs are zeroed (o_proj, down_proj), so the residual stream is the token's own
  embedding and the logits depend on the current token alone; the lm head is then solved by least squares
  to put each successor on top with a margin of 8. Every other part (cache, RoPE, masks) still runs.
  """

  assert len(successors) < config.d_model, "least squares needs fewer keys than model dims"
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(Llama(config).init_variables, jax.random.key(seed))
  variables = jax.tree_util.tree_map_with_path(
      lambda path, x: np.ones(x.shape, np.float32) if path[-1].key == "scale"
      else 0.2 * rng.standard_normal(x.shape).astype(np.float32), shapes)
  params = variables["params"]
  for i in range(config.n_layers):
    params[f"layers_{i}"]["self_attn"]["o_proj"]["kernel"] *= 0
    params[f"layers_{i}"]["mlp"]["down_proj"]["kernel"] *= 0
  emb = rng.standard_normal((config.vocab_size, config.d_model)).astype(np.float32)
  params["embed_tokens"]["embedding"] = emb
  keys = list(successors)
  x = emb[keys]
  x = x / np.sqrt((x * x).mean(-1, keepdims=True) + config.rms_eps)
  y = np.zeros((len(keys), config.vocab_size), np.float32)
  y[np.arange(len(keys)), [successors[k] for k in keys]] = 8.0
  params["lm_head"] = np.linalg.lstsq(x, y, rcond=None)[0].astype(np.float32)
  return variables


def scripted_chains(tokenizer) -> dict[int, int]:
  """':' -> ANSWER -> '\\nuser:' -> (cycles back); 'ది' -> SECOND -> <eos>."""
  colon = tokenizer.encode(":")[-1]
  first = [colon] + tokenizer.encode(ANSWER) + tokenizer.encode("\nuser:")
  assert first[-1] == colon
  di = tokenizer.encode("ది")
  assert len(di) == 1
  second = di + tokenizer.encode(SECOND) + [tokenizer.eos_id]
  succ = dict(zip(first[:-1], first[1:], strict=True))
  succ.update(zip(second[:-1], second[1:], strict=True))
  assert len(succ) == len(first) - 1 + len(second) - 1, "the chains must not share a token"
  return succ


def scripted_config(tokenizer):
  from telugu_jax.model import LlamaConfig

  return LlamaConfig.tiny(vocab_size=tokenizer.vocab_size)


@pytest.fixture(scope="module")
def scripted(sp_tokenizer):
  cfg = scripted_config(sp_tokenizer)
  return Generator(cfg, scripted_variables(cfg, scripted_chains(sp_tokenizer)), tokenizer=sp_tokenizer)


def test_stop_string_and_eos_end_generation_exactly(scripted, sp_tokenizer):
  tok = sp_tokenizer
  prompts = [[tok.bos_id] + tok.encode("user: హలో\nassistant:"), [tok.bos_id] + tok.encode("ఇది")]
  streamed = {0: [], 1: []}
  out = scripted.generate(prompts, SamplingConfig(max_new_tokens=40), stop_strings=("\nuser:",),
                          stream=lambda row, text: streamed[row].append(text))
  stop_row, eos_row = out
  assert stop_row.ids == tok.encode(ANSWER) + tok.encode("\nuser:")   # ends on the token that completed it
  assert stop_row.text == ANSWER and stop_row.finish_reason == "stop"
  assert eos_row.ids == tok.encode(SECOND) + [tok.eos_id]
  assert eos_row.text == SECOND and eos_row.finish_reason == "eos"
  # Streaming gives exactly the final text, and never shows a piece of the stop string on the way.
  assert "".join(streamed[0]) == ANSWER and "".join(streamed[1]) == SECOND
  assert not any("\n" in piece for piece in streamed[0])


def test_max_new_tokens_holds_without_a_stop(scripted, sp_tokenizer):
  tok = sp_tokenizer
  prompt = [tok.bos_id] + tok.encode("user: హలో\nassistant:")
  [out] = scripted.generate([prompt], SamplingConfig(max_new_tokens=40))   # no stop strings: the script cycles
  cycle = tok.encode(ANSWER) + tok.encode("\nuser:")
  assert out.finish_reason == "length"
  assert out.ids == (cycle * 4)[:40]
  assert out.text == tok.decode(out.ids)
