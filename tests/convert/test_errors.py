"""Every error a user can act on is raised with a message that says what is wrong and what to do, and a
failed conversion leaves nothing behind that looks like a model directory."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from telugu_jax.convert import (
    ConfigMismatchError,
    ConversionError,
    ExportError,
    KeyMismatchError,
    ShapeMismatchError,
    UnknownLayoutError,
    UnsafeCheckpointError,
    convert,
    export_hf,
    export_peft,
)
from telugu_jax.convert.__main__ import main as convert_main
from telugu_jax.model import LoraConfig
from telugu_jax.model import io as model_io
from telugu_jax.model.io import load_model, save_model
from telugu_jax.tokenizer import TokenizerError
from tests.convert.conftest import random_variables
from tests.model.hf_reference import make_hf_llama

QUIET = dict(log=lambda s: None)


def _hf_folder(path, ref, sd=None, **config_changes):
  """A HF folder from `ref`, with its state dict replaced by `sd` and config.json fields changed."""
  path.mkdir()
  sd = {k: v.contiguous() for k, v in (sd if sd is not None else ref.state_dict()).items()}
  save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
  cfg = {**ref.config.to_dict(), **config_changes}
  (path / "config.json").write_text(json.dumps(cfg))
  return path


def _assert_nothing_written(tmp_path, dst="out"):
  assert not (tmp_path / dst).exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_unknown_layout(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.txt").write_text("hello")
  for src in (tmp_path / "empty", tmp_path / "notes.txt"):
    with pytest.raises(UnknownLayoutError, match="Understood layouts: a Hugging Face folder") as e:
      convert(src, tmp_path / "out", **QUIET)
    assert "--key-map" in str(e.value) and "Meta folder" in str(e.value)
  _assert_nothing_written(tmp_path)


def test_cli_prints_the_message_not_a_traceback(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  assert convert_main(["--from", str(tmp_path / "empty"), "--to", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: cannot tell the checkpoint layout") and "Traceback" not in err


def test_names_neither_hf_nor_meta_ask_for_a_key_map(hf_ref, tmp_path):
  torch.save({"blocks.0.w": torch.zeros(2), "emb": torch.zeros(3)}, tmp_path / "ckpt.pt")
  (tmp_path / "config.json").write_text(json.dumps(hf_ref.config.to_dict()))
  with pytest.raises(KeyMismatchError, match="neither Hugging Face nor Meta names.*Pass --key-map FILE"):
    convert(tmp_path / "ckpt.pt", tmp_path / "out", config_file=str(tmp_path / "config.json"), **QUIET)
  _assert_nothing_written(tmp_path)


def test_missing_and_unexpected_keys_name_the_closest_match(hf_ref, tmp_path):
  sd = dict(hf_ref.state_dict())
  sd["model.layers.1.mlp.upp_proj.weight"] = sd.pop("model.layers.1.mlp.up_proj.weight")
  with pytest.raises(KeyMismatchError) as e:
    convert(_hf_folder(tmp_path / "src", hf_ref, sd), tmp_path / "out", **QUIET)
  msg = str(e.value)
  assert ("1 model weight(s) have no source in the checkpoint:\n    layers_1/mlp/up_proj/kernel (looked for "
          "'model.layers.1.mlp.up_proj.weight'; closest: 'model.layers.1.mlp.upp_proj.weight')") in msg
  assert ("1 checkpoint tensor(s) have no place in the model:\n    model.layers.1.mlp.upp_proj.weight; closest: "
          "'model.layers.1.mlp.up_proj.weight'") in msg
  assert "--key-map" in msg
  _assert_nothing_written(tmp_path)


def test_missing_key_alone_and_extra_key_alone(hf_ref, tmp_path):
  sd = dict(hf_ref.state_dict())
  del sd["model.layers.0.self_attn.k_proj.weight"]
  with pytest.raises(KeyMismatchError, match=r"(?s)1 model weight\(s\) have no source.*layers_0/self_attn/k_proj"):
    convert(_hf_folder(tmp_path / "a", hf_ref, sd), tmp_path / "out", **QUIET)
  sd = {**hf_ref.state_dict(), "model.layers.0.mlp.extra_bias": torch.zeros(80)}
  with pytest.raises(KeyMismatchError, match=r"1 checkpoint tensor\(s\) have no place in the model:\n    "
                                             r"model\.layers\.0\.mlp\.extra_bias") as e:
    convert(_hf_folder(tmp_path / "b", hf_ref, sd), tmp_path / "out", **QUIET)
  assert "no source" not in str(e.value)
  _assert_nothing_written(tmp_path)


def test_shape_mismatch_names_tensor_expected_and_found(hf_ref, tmp_path):
  sd = dict(hf_ref.state_dict())
  sd["model.layers.1.self_attn.v_proj.weight"] = sd["model.layers.1.self_attn.v_proj.weight"].T
  with pytest.raises(ShapeMismatchError, match=r"1 tensor\(s\) have the wrong shape:\n  "
                     r"model\.layers\.1\.self_attn\.v_proj\.weight -> layers_1/self_attn/v_proj/kernel: "
                     r"expected \[48, 16\], found \[16, 48\]"):
    convert(_hf_folder(tmp_path / "src", hf_ref, sd), tmp_path / "out", **QUIET)
  _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("change, message", [
    (dict(vocab_size=500), "the config and the weights disagree: vocab_size: the config says 500, the weights have "
                           "431 (model.embed_tokens.weight)"),
    (dict(intermediate_size=96), "intermediate_size (ffn_dim): the config says 96, the weights have 80"),
    (dict(num_hidden_layers=3), "disagree on the number of layers: the config says 3"),
    (dict(num_hidden_layers=1), "the checkpoint holds layers 0..1"),
])
def test_config_and_weights_disagree(change, message, hf_ref, tmp_path):
  with pytest.raises(ConfigMismatchError) as e:
    convert(_hf_folder(tmp_path / "src", hf_ref, **change), tmp_path / "out", **QUIET)
  assert message in str(e.value)
  _assert_nothing_written(tmp_path)


def test_unsupported_architecture_config(hf_ref, tmp_path):
  with pytest.raises(ConversionError, match="cannot use the architecture config of .*'qwen2'"):
    convert(_hf_folder(tmp_path / "src", hf_ref, model_type="qwen2"), tmp_path / "out", **QUIET)
  _assert_nothing_written(tmp_path)


def test_tied_embedding_disagreements(hf_ref, tmp_path):
  # Tied config, but the checkpoint's lm_head is a different matrix: refusing beats dropping it.
  with pytest.raises(ConfigMismatchError, match="lm_head.weight differs from the embedding"):
    convert(_hf_folder(tmp_path / "a", hf_ref, tie_word_embeddings=True), tmp_path / "out", **QUIET)
  sd = {k: v for k, v in hf_ref.state_dict().items() if k != "lm_head.weight"}
  with pytest.raises(ConfigMismatchError, match="no output weight.*set tie_word_embeddings=true"):
    convert(_hf_folder(tmp_path / "b", hf_ref, sd), tmp_path / "out", **QUIET)
  _assert_nothing_written(tmp_path)


def test_tokenizer_larger_than_embedding(sp_tokenizer, tmp_path):
  ref = make_hf_llama(seed=1)  # vocab 97 < the tokenizer's 420 pieces
  src = _hf_folder(tmp_path / "src", ref)
  sp_tokenizer.save(src)
  with pytest.raises(TokenizerError, match="the tokenizer has 420 tokens but the model's embedding table has 97 rows"):
    convert(src, tmp_path / "out", **QUIET)
  _assert_nothing_written(tmp_path)


class NotATensor:
  pass


def test_pickles_are_loaded_weights_only(tmp_path):
  torch.save({"model": {"w": torch.zeros(2)}, "hook": NotATensor()}, tmp_path / "evil.pt")
  with pytest.raises(UnsafeCheckpointError, match="never runs code from a checkpoint.*Unsupported global"):
    convert(tmp_path / "evil.pt", tmp_path / "out", preset="tiny", **QUIET)
  _assert_nothing_written(tmp_path)


def test_bare_state_dict_needs_an_architecture(hf_ref, tmp_path):
  torch.save(hf_ref.state_dict(), tmp_path / "ckpt.pt")
  with pytest.raises(ConversionError, match="bare state dict: give its architecture with --config FILE"):
    convert(tmp_path / "ckpt.pt", tmp_path / "out", **QUIET)


def test_failure_while_writing_leaves_nothing(hf_ref, tmp_path, monkeypatch):
  real = model_io._save_tree

  def save_then_fail(path, tree):
    real(path, tree)  # the weights are on disk, in the temporary directory ...
    raise OSError("disk full")  # ... when the write fails

  monkeypatch.setattr(model_io, "_save_tree", save_then_fail)
  with pytest.raises(OSError, match="disk full"):
    convert(_hf_folder(tmp_path / "src", hf_ref), tmp_path / "out", **QUIET)
  _assert_nothing_written(tmp_path)


def test_export_refuses_to_drop_an_adapter(hf_ref, tmp_path):
  base = load_model(convert(_hf_folder(tmp_path / "src", hf_ref), tmp_path / "base", **QUIET))
  lcfg = LoraConfig(rank=2, targets=("q_proj",))
  lora = random_variables(base.config, lcfg)["lora"]
  save_model(tmp_path / "sft", base.config, lora=lora, lora_config=lcfg, base=str(tmp_path / "base"))
  with pytest.raises(ExportError, match="has a LoRA adapter: pass --merge .* --format peft .* or --base-only"):
    export_hf(tmp_path / "sft", tmp_path / "hf", **QUIET)
  with pytest.raises(ExportError, match="has no LoRA adapter to export; use --format hf"):
    export_peft(tmp_path / "base", tmp_path / "peft", **QUIET)
  assert not (tmp_path / "hf").exists() and not (tmp_path / "peft").exists()


def test_peft_features_we_cannot_represent_are_refused(hf_ref, tmp_path, capsys):
  convert(_hf_folder(tmp_path / "src", hf_ref), tmp_path / "base", **QUIET)
  (tmp_path / "adapter").mkdir()
  cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "use_dora": True}
  (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
  save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 48)},
            tmp_path / "adapter" / "adapter_model.safetensors")
  args = ["--from", str(tmp_path / "adapter"), "--to", str(tmp_path / "out")]
  assert convert_main(args) == 2
  assert "is a PEFT adapter: pass --base CKPT" in capsys.readouterr().err
  assert convert_main(args + ["--base", str(tmp_path / "base")]) == 2
  assert "DoRA (use_dora=true) is not supported" in capsys.readouterr().err
  cfg["use_dora"] = False
  (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
  save_file({"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(2, 431)},
            tmp_path / "adapter" / "adapter_model.safetensors")
  assert convert_main(args + ["--base", str(tmp_path / "base")]) == 2
  assert "not LoRA weights of a Llama projection" in capsys.readouterr().err
  _assert_nothing_written(tmp_path)


def test_format_peft_on_a_hf_folder_says_what_it_is(tmp_path, capsys):
  """Issue 18 item 5: `--format peft` on a Hugging Face model folder said it "is a PEFT adapter"."""
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text("{}")
  (hf / "model.safetensors").write_bytes(b"")
  assert convert_main(["--from", str(hf), "--to", str(tmp_path / "out"), "--format", "peft"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "is not a PEFT adapter (no adapter_config.json)" in err and "a hf checkpoint" in err
  _assert_nothing_written(tmp_path)
