"""`python -m telugu_jax.tokenizer inspect`: what a tokenizer does to Telugu text and to the chat template."""

import json
import subprocess
import sys

import pytest

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatFormat, ChatTemplate, template_problem
from telugu_jax.data.records import Turn
from telugu_jax.model import LlamaConfig
from telugu_jax.model.io import save_model
from telugu_jax.tokenizer_check import inspect, main, read_texts, suggest_template, verdict
from tests.convert.conftest import random_variables

KEYS = ("vocab_size", "normalization", "byte_fallback", "tokens_per_word", "chars_per_token", "byte_fallback_rate",
        "unk_rate", "template_ok", "suggested_template")


def _inspect_json(capsys, *args) -> dict:
  assert main(["inspect", *map(str, args), "--json"]) == 0
  return json.loads(capsys.readouterr().out)


def test_default_settings_tokenizer_loses_newline_and_gets_a_template(default_sp_tokenizer, tmp_path, capsys):
  path = default_sp_tokenizer.save(tmp_path)
  r = _inspect_json(capsys, path)
  assert set(KEYS) <= set(r)
  assert r["normalization"] == "nmt_nfkc" and r["byte_fallback"] is False and r["byte_fallback_rate"] == 0
  assert not r["keeps_newline"] and not r["keeps_zwnj"] and not r["keeps_whitespace"]
  assert r["template_ok"] is False and "turn_sep '\\n' comes back as ' '" in r["template_problem"]
  suggested = ChatTemplate.from_dict(r["suggested_template"])
  assert suggested.turn_sep != "\n" and template_problem(default_sp_tokenizer, suggested) is None
  assert r["suggested_overrides"] == "--config.chat.turn_sep=' '"
  # The suggested template trains: prompt ids are a prefix of training ids, and the mask covers the answer.
  fmt = ChatFormat(default_sp_tokenizer, suggested)
  turns = [Turn("user", "భారతదేశ రాజధాని ఏది?"), Turn("assistant", "భారతదేశ రాజధాని న్యూఢిల్లీ.")]
  enc, prompt = fmt.encode(turns), fmt.encode_prompt(turns[:1])
  assert enc.ids[:len(prompt)].tolist() == prompt.tolist() and enc.loss_mask[:len(prompt)].sum() == 0
  assert 0 < r["unk_rate"] < 0.05 and r["tokens_per_word"] > 1 and r["chars_per_token"] > 1
  # The human-readable report says the same in lines.
  assert main(["inspect", str(path)]) == 0
  out = capsys.readouterr().out
  assert "newlines NO" in out and "use --config.chat.turn_sep=' '" in out


def test_chat_tokenizer_keeps_the_template(sp_tokenizer, tmp_path, capsys):
  text = tmp_path / "te.txt"
  text.write_text("తెలుగు భాష చాలా మధురమైన భాష.\nమా ఊరిలో ఒక పెద్ద చెరువు ఉంది.\n", encoding="utf-8")
  r = _inspect_json(capsys, sp_tokenizer.save(tmp_path / "tok"), "--text", text)
  assert r["normalization"] == "identity" and r["byte_fallback"] is True
  assert r["keeps_newline"] and r["keeps_zwnj"] and r["keeps_whitespace"]
  assert r["template_ok"] is True and r["suggested_template"] is None
  assert r["words"] == 11 and r["unk_rate"] == 0
  assert r["tokens_per_word"] == pytest.approx(r["tokens"] / 11, abs=1e-3)


def test_model_directory_is_checked_against_its_recorded_template(default_sp_tokenizer, tmp_path, capsys):
  cfg = LlamaConfig.tiny(vocab_size=default_sp_tokenizer.vocab_size)
  tmpl = ChatTemplate(turn_sep=" ")
  save_model(tmp_path / "m", cfg, params=random_variables(cfg)["params"], tokenizer=default_sp_tokenizer,
             extra={"chat_template": tmpl.to_dict()})
  r = _inspect_json(capsys, tmp_path / "m")
  assert r["template"] == tmpl.to_dict() and r["template_ok"] is True
  assert main(["inspect", str(tmp_path / "nothing")]) == 2
  assert "error:" in capsys.readouterr().err


def test_suggestion_falls_back_to_telugu_markers():
  class NoLatin:
    """A character tokenizer that knows no Latin letters (they come back as ?) and writes newlines as spaces."""
    vocab_size, bos_id, eos_id, pad_id = 1000, 1, 2, 0

    def encode(self, text):
      return [ord(c) for c in text]

    def encode_with_offsets(self, text):
      return self.encode(text), list(range(len(text)))

    def decode(self, ids):
      return "".join("?" if chr(i).isascii() and chr(i).isalpha() else " " if chr(i) == "\n" else chr(i)
                     for i in ids if i > 2)

  assert template_problem(NoLatin(), DEFAULT_TEMPLATE) is not None
  assert suggest_template(NoLatin()) == ChatTemplate(user="ప్రశ్న:", assistant="జవాబు:", turn_sep=" ")


def test_verdict_and_module_entry_point(default_sp_tokenizer, sp_tokenizer, tmp_path):
  line = verdict(default_sp_tokenizer, option_prefix="--chat-")
  assert "tokens per Telugu word" in line and line.endswith("use --chat-turn-sep=' '") and "\n" not in line
  assert verdict(sp_tokenizer).endswith("chat template ok")
  assert len(read_texts([])) > 10      # the bundled prose
  out = subprocess.run([sys.executable, "-m", "telugu_jax.tokenizer", "inspect", sp_tokenizer.save(tmp_path), "--json"],
                       capture_output=True, text=True, check=True).stdout
  assert json.loads(out)["template_ok"] is True
  assert inspect(sp_tokenizer, ["తెలుగు"])["words"] == 1


def test_tokenizer_json(hf_tokenizer_dir, capsys):
  r = _inspect_json(capsys, hf_tokenizer_dir)
  assert r["type"] == "tokenizer.json" and r["byte_fallback"] is True and r["byte_level"] is True
  assert r["template_ok"] is True and r["keeps_newline"] and r["unk_rate"] == 0
