"""PyTorch checkpoints of every input layout -> model directory: logits equal `LlamaForCausalLM` at
1e-5 (float32, weights at std 0.2)."""

import json

import chex
import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from telugu_jax.convert import convert
from telugu_jax.convert.__main__ import main as convert_main
from telugu_jax.model.io import load_model
from tests.convert.conftest import VOCAB, our_logits, torch_logits
from tests.model.hf_reference import hf_to_variables, make_hf_llama

QUIET = dict(log=lambda s: None)


def _assert_same_logits(model_dir, ref):
  """Logits at 1e-5, and the weights bit-equal to the tests' independent hand-written HF copy."""
  loaded = load_model(model_dir)
  if loaded.config.param_dtype == "float32":
    want = hf_to_variables(ref)["params"]
    same = jax.tree_util.tree_map(np.array_equal, want, loaded.variables["params"])
    assert jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(loaded.variables["params"])
    assert all(jax.tree_util.tree_leaves(same))
  expected = torch_logits(ref)
  assert np.abs(expected).max() > 1.0  # std 0.2 weights: logits far from zero, so 1e-5 is a real test
  chex.assert_trees_all_close(our_logits(loaded), expected, atol=1e-5, rtol=1e-5)
  return loaded


def test_safetensors_folder(converted, hf_ref, sp_tokenizer):
  loaded = _assert_same_logits(converted, hf_ref)
  assert loaded.config.param_dtype == "float32" and loaded.config.vocab_size == VOCAB
  assert loaded.tokenizer.encode("తెలుగు భాష") == sp_tokenizer.encode("తెలుగు భాష")  # copied beside the weights
  assert loaded.meta["converted_from"]["layout"] == "hf"


@pytest.mark.parametrize("layout", ["sharded-safetensors", "bin", "sharded-bin"])
def test_other_hf_layouts(layout, hf_ref, tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  hf_ref.config.save_pretrained(src)
  sd = {k: v.clone() for k, v in hf_ref.state_dict().items()}
  if layout == "sharded-safetensors":
    hf_ref.save_pretrained(src, max_shard_size="20KB")
    assert (src / "model.safetensors.index.json").exists() and not (src / "model.safetensors").exists()
  elif layout == "bin":
    torch.save(sd, src / "pytorch_model.bin")  # save_pretrained would write safetensors regardless
  else:
    names = sorted(sd)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for file, keys in halves.items():
      torch.save({k: sd[k] for k in keys}, src / file)
    weight_map = {k: f for f, keys in halves.items() for k in keys}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
  _assert_same_logits(convert(src, tmp_path / "out", **QUIET), hf_ref)


@pytest.mark.parametrize("kw", [
    pytest.param(dict(num_key_value_heads=1, tie_word_embeddings=True), id="mqa-tied"),
    pytest.param(dict(num_key_value_heads=3, rope_parameters={
        "rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), id="gqa3-llama3-old-config"),
])
def test_architecture_variants(kw, tmp_path):
  ref = make_hf_llama(seed=4, vocab_size=VOCAB, **kw)
  ref.save_pretrained(tmp_path / "src")
  if "rope_parameters" in kw:  # rewrite config.json the way transformers 4.x wrote it
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
  loaded = _assert_same_logits(convert(tmp_path / "src", tmp_path / "out", **QUIET), ref)
  assert ("lm_head" in loaded.variables["params"]) == (not kw.get("tie_word_embeddings", False))


def _to_meta(ref) -> tuple[dict, dict]:
  """The HF model in Meta's names, with q/k rows put back in Meta's interleaved rotary order (the inverse
  of the permutation transformers' convert_llama_weights_to_hf applies), and its params.json."""
  c = ref.config
  sd = ref.state_dict()

  def unpermute(w, n_heads):
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols).clone()

  meta = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
          "output.weight": sd["lm_head.weight"]}
  for i in range(c.num_hidden_layers):
    p = f"model.layers.{i}."
    meta.update({
        f"layers.{i}.attention.wq.weight": unpermute(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads),
        f"layers.{i}.attention.wk.weight": unpermute(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads),
        f"layers.{i}.attention.wv.weight": sd[p + "self_attn.v_proj.weight"],
        f"layers.{i}.attention.wo.weight": sd[p + "self_attn.o_proj.weight"],
        f"layers.{i}.feed_forward.w1.weight": sd[p + "mlp.gate_proj.weight"],
        f"layers.{i}.feed_forward.w2.weight": sd[p + "mlp.down_proj.weight"],
        f"layers.{i}.feed_forward.w3.weight": sd[p + "mlp.up_proj.weight"],
        f"layers.{i}.attention_norm.weight": sd[p + "input_layernorm.weight"],
        f"layers.{i}.ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
    })
  # 4 * 48 * 2/3 = 128 and 0.625 * 128 = 80 = intermediate_size: Meta's sizing rule, as params.json gives it.
  params = {"dim": c.hidden_size, "n_layers": c.num_hidden_layers, "n_heads": c.num_attention_heads,
            "n_kv_heads": c.num_key_value_heads, "vocab_size": -1, "multiple_of": 16, "ffn_dim_multiplier": 0.625,
            "norm_eps": c.rms_norm_eps, "rope_theta": 10000.0, "max_seq_len": 128}
  return meta, params


@pytest.mark.parametrize("shards", [1, 2])
def test_meta_layout(shards, hf_ref, tmp_path, sp_tokenizer):
  meta, params = _to_meta(hf_ref)
  src = tmp_path / "meta"
  src.mkdir()
  (src / "params.json").write_text(json.dumps(params))
  sp_tokenizer.save(src)
  if shards == 1:
    torch.save(meta, src / "consolidated.00.pth")
  else:  # model parallel: output rows split for wq/wk/wv/w1/w3/output, input columns for wo/w2, embedding by dim
    parts = [{}, {}]
    for name, w in meta.items():
      if name.endswith("norm.weight"):
        chunks = [w, w]
      elif name == "tok_embeddings.weight" or any(s in name for s in ("wo.", "w2.")):
        chunks = torch.chunk(w, 2, dim=1)
      else:
        chunks = torch.chunk(w, 2, dim=0)
      for part, chunk in zip(parts, chunks, strict=True):
        part[name] = chunk.clone()
    for i, part in enumerate(parts):
      torch.save(part, src / f"consolidated.{i:02d}.pth")
  loaded = _assert_same_logits(convert(src, tmp_path / "out", **QUIET), hf_ref)
  assert loaded.config.ffn_dim == 80 and loaded.config.vocab_size == VOCAB and loaded.tokenizer is not None


def test_custom_state_dict_with_key_map(hf_ref, tmp_path, capsys):
  """A user's training script saved {"model": state_dict, ...} under DDP, with its own names."""
  rename = [(r"model.embed_tokens.weight", "tok.weight"), ("model.norm.weight", "final_ln.g"),
            ("lm_head.weight", "head.weight"), ("model.layers.", "blocks."), ("self_attn.", "attn."),
            ("mlp.gate_proj", "ff.w_gate"), ("mlp.up_proj", "ff.w_up"), ("mlp.down_proj", "ff.w_down"),
            ("input_layernorm.weight", "ln1.g"), ("post_attention_layernorm.weight", "ln2.g")]
  sd = {}
  for name, w in hf_ref.state_dict().items():
    for old, new in rename:
      name = name.replace(old, new)
    sd["module." + name] = w.clone()
  sd["module.blocks.0.attn.causal_mask"] = torch.ones(4, 4)  # a buffer, skipped by the key map's null
  torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "step": 1200}, tmp_path / "ckpt.pt")
  key_map = {
      r"tok\.weight": "embed_tokens/embedding", r"final_ln\.g": "norm/scale", r"head\.weight": "lm_head",
      r"blocks\.(\d+)\.attn\.(q|k|v|o)_proj\.weight": r"layers_\1/self_attn/\2_proj/kernel",
      r"blocks\.(\d+)\.ff\.w_(gate|up|down)\.weight": r"layers_\1/mlp/\2_proj/kernel",
      r"blocks\.(\d+)\.ln1\.g": r"layers_\1/input_layernorm/scale",
      r"blocks\.(\d+)\.ln2\.g": r"layers_\1/post_attention_layernorm/scale",
      r"blocks\.\d+\.attn\.causal_mask": None,
  }
  (tmp_path / "keymap.json").write_text(json.dumps(key_map))
  (tmp_path / "config.json").write_text(json.dumps(hf_ref.config.to_dict()))
  rc = convert_main(["--from", str(tmp_path / "ckpt.pt"), "--to", str(tmp_path / "out"), "--key-map",
                     str(tmp_path / "keymap.json"), "--config", str(tmp_path / "config.json")])
  assert rc == 0
  out = capsys.readouterr().out  # what was left out is said, not silently dropped
  assert "using the state dict under 'model' in ckpt.pt (also there, not converted: ['optimizer', 'step'])" in out
  assert "removed the name prefix 'module.'" in out and "skipped buffer blocks.0.attn.causal_mask" in out
  _assert_same_logits(tmp_path / "out", hf_ref)


def test_bare_safetensors_with_hf_names_and_preset_overrides(hf_ref, tmp_path):
  """No config file: a preset plus --set overrides describe the architecture; HF names are recognised."""
  save_file({k: v.contiguous() for k, v in hf_ref.state_dict().items()}, tmp_path / "weights.safetensors")
  c = hf_ref.config
  sets = [f"vocab_size={VOCAB}", f"d_model={c.hidden_size}", f"n_layers={c.num_hidden_layers}",
          f"n_heads={c.num_attention_heads}", f"n_kv_heads={c.num_key_value_heads}", f"head_dim={c.head_dim}",
          f"ffn_dim={c.intermediate_size}", f"rms_eps={c.rms_norm_eps}", "tie_embeddings=false", "max_seq_len=128"]
  args = ["--from", str(tmp_path / "weights.safetensors"), "--to", str(tmp_path / "out"), "--preset", "tiny"]
  assert convert_main(args + [a for s in sets for a in ("--set", s)]) == 0
  _assert_same_logits(tmp_path / "out", hf_ref)


def test_bf16_checkpoint_stays_bf16_unless_asked(tmp_path):
  ref = make_hf_llama(seed=5, vocab_size=VOCAB).to(torch.bfloat16)
  ref.save_pretrained(tmp_path / "src")
  bf16 = load_model(convert(tmp_path / "src", tmp_path / "bf16", **QUIET))
  f32 = load_model(convert(tmp_path / "src", tmp_path / "f32", dtype="float32", **QUIET))
  assert bf16.config.param_dtype == "bfloat16" and f32.config.param_dtype == "float32"
  emb = ref.model.embed_tokens.weight.detach().float().numpy()
  assert bf16.variables["params"]["embed_tokens"]["embedding"].dtype.name == "bfloat16"
  np.testing.assert_array_equal(np.asarray(bf16.variables["params"]["embed_tokens"]["embedding"], np.float32), emb)
  np.testing.assert_array_equal(f32.variables["params"]["embed_tokens"]["embedding"], emb)
  # float32 compute on the (exactly widened) bf16 weights equals transformers loading them in float32
  # (not `ref.float()`: casting the module to bf16 also rounded its rotary inv_freq buffer)
  ref32 = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "src", dtype=torch.float32).eval()
  chex.assert_trees_all_close(our_logits(f32), torch_logits(ref32), atol=1e-5, rtol=1e-5)
