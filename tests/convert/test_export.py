"""Model directory -> Hugging Face / PEFT folders: bit-exact round trips, the chat template, PEFT adapters
both ways, merge-and-export against `peft`'s merge_and_unload."""

import json

import chex
import numpy as np
import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

from telugu_jax.chat_format import ChatFormat, ChatTemplate
from telugu_jax.convert import ExportError, convert, export_hf, export_peft, hf_files
from telugu_jax.convert.__main__ import main as convert_main
from telugu_jax.data.records import Turn
from telugu_jax.export import main as export_main
from telugu_jax.model import LlamaConfig, LoraConfig
from telugu_jax.model.io import load_model, save_model
from telugu_jax.tokenizer import HFTokenizer, SentencePieceTokenizer
from tests.convert.conftest import VOCAB, our_logits, random_variables, torch_logits
from tests.model.hf_reference import make_hf_llama

QUIET = dict(log=lambda s: None)


def _load_hf(path):
  return transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _assert_same_tensors(a_file, b_file):
  a, b = load_file(a_file), load_file(b_file)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_hf_round_trip_float32_is_bit_exact(hf_dir, hf_ref, converted, tmp_path):
  assert export_main(["--checkpoint", str(converted), "--to", str(tmp_path / "hf"), "--format", "hf"]) == 0
  _assert_same_tensors(hf_dir / "model.safetensors", tmp_path / "hf" / "model.safetensors")
  back = _load_hf(tmp_path / "hf")
  np.testing.assert_array_equal(torch_logits(back), torch_logits(hf_ref))
  a, b = json.loads((hf_dir / "config.json").read_text()), json.loads((tmp_path / "hf" / "config.json").read_text())
  for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "intermediate_size", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings"):
    assert a[key] == b[key], key


def test_hf_round_trip_bfloat16_is_bit_exact(tmp_path):
  ref = make_hf_llama(seed=7, vocab_size=VOCAB, num_key_value_heads=1, tie_word_embeddings=True)
  ref.to(torch.bfloat16).save_pretrained(tmp_path / "src")
  convert(tmp_path / "src", tmp_path / "ours", **QUIET)
  export_hf(tmp_path / "ours", tmp_path / "hf", **QUIET)
  _assert_same_tensors(tmp_path / "src" / "model.safetensors", tmp_path / "hf" / "model.safetensors")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["dtype"] == "bfloat16" and config["tie_word_embeddings"] is True
  assert transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").dtype == torch.bfloat16


CONVERSATIONS = [
    [Turn("user", "భారతదేశ రాజధాని ఏది?")],
    [Turn("user", "నమస్కారం! మీ పేరు ఏమిటి?"), Turn("assistant", "నా పేరు సీత. మీకు ఎలా సహాయం చేయగలను?"),
     Turn("user", "ఒక చిన్న కవిత రాయండి.\nవర్షం గురించి.")],
]


def _check_chat_files(folder, tokenizer):
  hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
  fmt = ChatFormat(tokenizer)
  for turns in CONVERSATIONS:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    got = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert got["input_ids"] == [int(i) for i in fmt.encode_prompt(turns)]
  # A whole conversation: our training ids, and the assistant mask equals our loss mask.
  turns = CONVERSATIONS[1][:2] + [Turn("user", "ధన్యవాదాలు"), Turn("assistant", "సంతోషం!\nమళ్ళీ కలుద్దాం.")]
  enc = fmt.encode(turns)
  got = hf_tok.apply_chat_template([{"role": t.role, "content": t.content} for t in turns], tokenize=True,
                                   return_dict=True, return_assistant_tokens_mask=True)
  assert got["input_ids"] == enc.ids.tolist() and got["assistant_masks"] == enc.loss_mask.tolist()
  gen = json.loads((folder / "generation_config.json").read_text())
  assert gen["eos_token_id"] == tokenizer.eos_id and gen["bos_token_id"] == tokenizer.bos_id
  with pytest.raises(Exception, match="user and assistant only"):
    hf_tok.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])


def test_chat_template_sentencepiece(converted, sp_tokenizer, tmp_path):
  export_hf(converted, tmp_path / "hf", **QUIET)
  assert (tmp_path / "hf" / "tokenizer.model").exists()
  _check_chat_files(tmp_path / "hf", sp_tokenizer)
  with pytest.raises(ExportError, match="other ids than it was trained on"):  # the check export runs can fail
    hf_files.verify_tokenizer(tmp_path / "hf", _dummy_prefix_sentencepiece())


def _dummy_prefix_sentencepiece():
  """Like Llama 2's tokenizer.model: a dummy-prefix space before the text, identity normalisation."""
  import io

  import sentencepiece as spm

  from tests.conftest import TELUGU_SENTENCES

  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TELUGU_SENTENCES * 4), model_writer=buf, vocab_size=400, model_type="bpe",
      normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
      byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
  return SentencePieceTokenizer(buf.getvalue())


@pytest.mark.parametrize("kind", ["tokenizer.json", "sentencepiece-dummy-prefix"])
def test_chat_template_other_tokenizers(kind, hf_tokenizer_dir, tmp_path):
  tok = HFTokenizer(hf_tokenizer_dir) if kind == "tokenizer.json" else _dummy_prefix_sentencepiece()
  cfg = LlamaConfig.tiny(vocab_size=tok.vocab_size)
  save_model(tmp_path / "m", cfg, params=random_variables(cfg)["params"], tokenizer=tok)
  export_hf(tmp_path / "m", tmp_path / "hf", **QUIET)
  _check_chat_files(tmp_path / "hf", tok)


@pytest.fixture(scope="module")
def adapter_dir(converted, tmp_path_factory):
  """A random (train-free) LoRA on the converted base, saved as an adapter-only model directory."""
  base = load_model(converted, with_tokenizer=False)
  lcfg = LoraConfig(rank=3, alpha=5.0, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"))
  path = tmp_path_factory.mktemp("sft") / "sft"
  lora = random_variables(base.config, lcfg, seed=11)["lora"]  # train-free: B != 0
  save_model(path, base.config, lora=lora, lora_config=lcfg, base=str(converted))
  return path


def test_peft_export_matches_jax(adapter_dir, tmp_path):
  out = tmp_path / "peft"
  assert export_main(["--checkpoint", str(adapter_dir), "--to", str(out), "--format", "peft", "--with-base"]) == 0
  cfg = json.loads((out / "adapter_config.json").read_text())
  assert cfg["r"] == 3 and cfg["lora_alpha"] == 5 and cfg["base_model_name_or_path"] == str(out / "base")
  pmodel = peft.PeftModel.from_pretrained(_load_hf(out / "base"), out).eval()
  ours = our_logits(load_model(adapter_dir))
  expected = torch_logits(pmodel)
  chex.assert_trees_all_close(ours, expected, atol=1e-4, rtol=1e-4)
  with pmodel.disable_adapter():
    assert np.abs(torch_logits(pmodel) - expected).max() > 1e-2  # the adapter matters


def test_merge_export_equals_merge_and_unload(adapter_dir, hf_dir, tmp_path):
  export_peft(adapter_dir, tmp_path / "peft", **QUIET)
  cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert cfg["base_model_name_or_path"] == str(hf_dir)  # the folder the base was converted from
  export_hf(adapter_dir, tmp_path / "merged", merge=True, **QUIET)
  want = peft.PeftModel.from_pretrained(_load_hf(hf_dir), tmp_path / "peft").merge_and_unload().state_dict()
  got = load_file(tmp_path / "merged" / "model.safetensors")
  assert sorted(got) == sorted(want)
  for k, v in got.items():
    np.testing.assert_allclose(v.numpy(), want[k].numpy(), atol=1e-6, rtol=1e-6, err_msg=k)
  chex.assert_trees_all_close(torch_logits(_load_hf(tmp_path / "merged")), our_logits(load_model(adapter_dir)),
                              atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layers", [None, [1]], ids=["all-layers", "layer-1-only"])
def test_peft_adapter_imports_as_lora(layers, hf_dir, converted, tmp_path):
  targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
  pcfg = peft.LoraConfig(r=4, lora_alpha=6, target_modules=targets, lora_dropout=0.0, use_rslora=True,
                         layers_to_transform=layers, task_type="CAUSAL_LM")
  pmodel = peft.get_peft_model(_load_hf(hf_dir), pcfg).eval()
  with torch.no_grad():  # a train-free adapter with B != 0
    torch.manual_seed(3)
    for name, p in pmodel.named_parameters():
      if "lora_" in name:
        p.copy_(0.1 * torch.randn_like(p))
  pmodel.save_pretrained(tmp_path / "adapter")
  assert convert_main(["--from", str(tmp_path / "adapter"), "--base", str(converted),
                       "--to", str(tmp_path / "ours")]) == 0
  loaded = load_model(tmp_path / "ours")
  assert loaded.lora_config == LoraConfig(rank=4, alpha=6.0, targets=tuple(targets), rslora=True)
  if layers == [1]:
    assert not np.any(loaded.variables["lora"]["layers_0"]["self_attn"]["q_proj"]["lora_b"])
  chex.assert_trees_all_close(our_logits(loaded), torch_logits(pmodel), atol=1e-4, rtol=1e-4)


def test_base_with_default_settings_tokenizer_exports_weights(default_sp_tokenizer, tmp_path, capsys):
  """A base whose tokenizer turns "\\n" into a space (sentencepiece defaults) converts, says which template it
  keeps, and exports back with its weights and tokenizer; only the chat template it cannot write is left out."""
  ref = make_hf_llama(seed=3, vocab_size=VOCAB)
  ref.save_pretrained(tmp_path / "src")
  default_sp_tokenizer.save(tmp_path / "src")
  assert convert_main(["--from", str(tmp_path / "src"), "--to", str(tmp_path / "ours")]) == 0
  out = capsys.readouterr().out
  assert "tokens per Telugu word" in out and "turn_sep '\\n' comes back as ' '" in out
  assert "use --chat-turn-sep=' '" in out
  assert load_model(tmp_path / "ours").meta["chat_template"] == ChatTemplate().to_dict()

  assert export_main(["--checkpoint", str(tmp_path / "ours"), "--to", str(tmp_path / "hf"), "--format", "hf"]) == 0
  out = capsys.readouterr().out
  assert len([line for line in out.splitlines() if "no chat_template in the export" in line]) == 1
  np.testing.assert_array_equal(torch_logits(_load_hf(tmp_path / "hf")), torch_logits(ref))
  assert "chat_template" not in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  text = "తెలుగు భాష చాలా మధురమైన భాష."
  assert hf_tok.encode(text, add_special_tokens=False) == default_sp_tokenizer.encode(text)

  # Converted with a template it keeps, the base exports a chat template that gives our prompt ids.
  assert convert_main(["--from", str(tmp_path / "src"), "--to", str(tmp_path / "ours2"), "--chat-turn-sep", " "]) == 0
  assert capsys.readouterr().out.count("chat template ok") == 1
  export_hf(tmp_path / "ours2", tmp_path / "hf2", **QUIET)
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf2")
  fmt = ChatFormat(default_sp_tokenizer, ChatTemplate(turn_sep=" "))
  for turns in CONVERSATIONS:
    got = hf_tok.apply_chat_template([{"role": t.role, "content": t.content} for t in turns],
                                     add_generation_prompt=True, tokenize=True, return_dict=True)
    assert got["input_ids"] == [int(i) for i in fmt.encode_prompt(turns)]
