"""Bring your own base: a tokenizer trained with sentencepiece's defaults (nmt_nfkc turns "\\n" into a space, no
byte fallback) cannot write `user: …\\nassistant: …`. `inspect` says so and suggests a template; the smoke SFT run
with that template trains, chats, evaluates and exports, every step reading the template from model.json."""

import json
import os

import numpy as np
import transformers

from telugu_jax import demo
from telugu_jax.chat import main as chat_main
from telugu_jax.chat_format import ChatTemplate
from telugu_jax.convert import export_hf
from telugu_jax.data.records import Turn
from telugu_jax.errors import run_cli
from telugu_jax.evaluate.answers import generate_answers
from telugu_jax.evaluate.metrics import invented_turn, script_share
from telugu_jax.evaluate.questions import load_questions
from telugu_jax.generate import SamplingConfig
from telugu_jax.model.io import load_model
from telugu_jax.tokenizer_check import main as inspect_main
from telugu_jax.train.__main__ import main as train_main


def test_default_settings_tokenizer_end_to_end(tmp_path, capsys):
  workdir = str(tmp_path / "own")
  paths = demo.prepare_data(workdir)
  demo.make_tokenizer(workdir, paths["text_train"], 512, sentencepiece_defaults=True)
  assert inspect_main(["inspect", os.path.join(workdir, "tokenizer"), "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["normalization"] == "nmt_nfkc" and not report["keeps_newline"] and not report["template_ok"]
  assert "turn_sep '\\n' comes back as ' '" in report["template_problem"]
  template = ChatTemplate.from_dict(report["suggested_template"])
  chat_args = [f"--config.chat.{k}={v}" for k, v in template.to_dict().items()]

  summary = demo.run(workdir, base_config="smoke_base", sft_config="smoke", vocab_size=512, evaluate=False,
                     samples=0, sentencepiece_defaults=True, sft_args=chat_args)
  sft = load_model(summary["sft"])
  assert sft.meta["chat_template"] == template.to_dict() and sft.chat_template == template
  assert summary["sft_ppl"]["ppl"] < summary["base_ppl"]["ppl"] and summary["sft_ppl"]["tokens"] > 0

  # The default template with this tokenizer: one line naming what is lost and the override, before compiling.
  capsys.readouterr()
  rc = run_cli(train_main, ["--config", "smoke", *demo.sft_overrides(workdir, paths),
                            f"--config.workdir={tmp_path / 'refused'}"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "\n" not in err and "turn_sep '\\n' comes back as ' '" in err
  assert "--config.chat.turn_sep=' '" in err and not os.path.exists(tmp_path / "refused" / "checkpoints")

  # chat: an answer in Telugu that stops at the turn separator instead of inventing a turn.
  question = "తెలుగు భాష గురించి రెండు వాక్యాలు చెప్పండి."
  assert chat_main(["--checkpoint", summary["sft"], "--prompt", question, "--max-new-tokens", "40",
                    "--no-safety"]) == 0   # sampled (temperature 0.7): greedy, this 30-step model writes spaces
  answer = capsys.readouterr().out.strip()
  assert answer and script_share(answer) > 0.5 and invented_turn(answer, template) is None

  # evaluate: prompts and format checks with the recorded template.
  sampling = SamplingConfig(max_new_tokens=32, temperature=0.7, top_p=0.9, repetition_penalty=1.1)
  rows = generate_answers(sft, load_questions(per_category=1)[:4], sampling)
  assert all(r["error"] is None and r["checks"]["invented_turn"] is None for r in rows)
  assert any((script_share(r["text"]) or 0) > 0.5 for r in rows)

  # export: a chat_template that gives our prompt ids (verify_tokenizer checks this too), weights merged.
  export_hf(summary["sft"], tmp_path / "hf", merge=True, log=lambda s: None)
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  fmt = sft.chat_format()
  turns = [Turn("user", "భారతదేశ రాజధాని ఏది?"), Turn("assistant", "న్యూఢిల్లీ."), Turn("user", question)]
  got = hf_tok.apply_chat_template([{"role": t.role, "content": t.content} for t in turns], add_generation_prompt=True,
                                   tokenize=True, return_dict=True)["input_ids"]
  assert got == fmt.encode_prompt(turns).tolist()
  assert np.array_equal(fmt.encode(turns[:2]).ids[:len(fmt.encode_prompt(turns[:1]))], fmt.encode_prompt(turns[:1]))
