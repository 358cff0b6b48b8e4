"""Issue 18 for train, evaluate and dpo: a user's mistake is one line on stderr and exit code 2 (the traceback
only with --debug), and the rejected.jsonl a run promises is written even when no example is left."""

import json
import os
import re
import shutil

import jax
import pytest

from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.errors import run_cli
from telugu_jax.model import Llama, LlamaConfig
from telugu_jax.model.io import save_model
from telugu_jax.train.__main__ import main as train_main
from telugu_jax.train.errors import TrainingError

from .test_loop import PAIRS, tiny_full_config, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sp_tokenizer):
  """A tiny base model directory, its data, and damaged copies of it."""
  d = tmp_path_factory.mktemp("errors")
  cfg = LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size)
  params = Llama(cfg).init_variables(jax.random.PRNGKey(0))["params"]
  save_model(d / "base", cfg, params=params, tokenizer=sp_tokenizer)
  # a model whose embedding table is smaller than its tokenizer
  save_model(d / "small_vocab", LlamaConfig.tiny(vocab_size=97),
             params=Llama(LlamaConfig.tiny(vocab_size=97)).init_variables(jax.random.PRNGKey(0))["params"],
             tokenizer=sp_tokenizer)
  for name in ("cut_tokenizer", "cut_weights", "cut_meta"):
    shutil.copytree(d / "base", d / name)
  _halve(d / "cut_tokenizer" / "tokenizer" / "tokenizer.model")
  for root, _, files in os.walk(d / "cut_weights" / "params"):
    for f in files:
      _halve(os.path.join(root, f))
  _halve(d / "cut_meta" / "model.json")
  write_jsonl(d / "train.jsonl", [Conversation.single(f"o{i}", u, a) for i, (u, a) in enumerate(PAIRS)])
  write_jsonl(d / "no_answers.jsonl", [Conversation.single(f"e{i}", u, "") for i, (u, _) in enumerate(PAIRS)])
  (d / "empty.jsonl").write_text("")
  return d


def _halve(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _cli(main, argv, capsys):
  rc = run_cli(main, argv)
  err = capsys.readouterr().err
  return rc, [line for line in err.splitlines() if line.strip()]


def _train_args(tiny, tmp_path, **over):
  o = {"base": str(tiny / "base"), "data.train": str(tiny / "train.jsonl"), "data.validation": "()",
       "data.max_seq_len": 64, "data.batch_size": 4, "model.preset": "tiny", "train.max_steps": 1,
       "workdir": str(tmp_path / "run"), **over}
  return ["--config", "lora", *(f"--config.{k}={v}" for k, v in o.items())]


def test_train_user_errors_are_one_line(tiny, tmp_path, capsys):
  """Item 3: each case printed a 25-80 line traceback before (the last line right); now only one line, exit 2."""
  cases = {
      "optim.lrr": (["--config", "lora", "--config.optim.lrr=1"], "no setting 'optim.lrr'"),
      "missing config": (["--config", str(tmp_path / "nope.py")], "not found"),
      "missing data": (_train_args(tiny, tmp_path, **{"data.train": str(tmp_path / "nope.jsonl")}),
                       r"data file\(s\) not found: .*nope.jsonl"),
      "empty data": (_train_args(tiny, tmp_path, **{"data.train": str(tiny / "empty.jsonl")}),
                     "no records at all"),
      "truncated tokenizer.model": (_train_args(tiny, tmp_path, base=str(tiny / "cut_tokenizer")),
                                    "tokenizer.model: not a readable sentencepiece model"),
      "truncated weights": (_train_args(tiny, tmp_path, base=str(tiny / "cut_weights")),
                            "cut_weights/params: the weights cannot be read"),
      "truncated model.json": (_train_args(tiny, tmp_path, base=str(tiny / "cut_meta")),
                               "cut_meta/model.json: not valid JSON"),
      "tokenizer larger than the model": (_train_args(tiny, tmp_path, base=str(tiny / "small_vocab")),
                                          "the tokenizer has \\d+ tokens but the model's embedding table has 97"),
  }
  for name, (argv, pattern) in cases.items():
    rc, lines = _cli(train_main, argv, capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
    assert re.search(pattern, lines[0]), (name, lines[0])
  # --debug shows the traceback instead
  with pytest.raises(Exception, match="not a readable sentencepiece model"):
    run_cli(train_main, [*_train_args(tiny, tmp_path, base=str(tiny / "cut_tokenizer")), "--debug"])


def test_no_usable_example_still_writes_rejected(tiny, tmp_path, capsys):
  """Item 3: all answers empty, or all too long: one line, and the promised rejected.jsonl lists every record."""
  for name, over, reason in (("empty answers", {"data.train": str(tiny / "no_answers.jsonl")}, "bad_turns"),
                             ("too long", {"data.max_seq_len": 4}, "too_long")):
    work = tmp_path / name.replace(" ", "_")
    rc, lines = _cli(train_main, _train_args(tiny, tmp_path, workdir=str(work), **over), capsys)
    assert rc == 2 and len(lines) == 1 and "no usable example in 8 record(s)" in lines[0], (name, lines)
    assert str(work / "rejected.jsonl") in lines[0]
    rejected = [json.loads(x) for x in (work / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 8 and {r["reason"] for r in rejected} == {reason}, (name, rejected[:2])


def test_dpo_and_evaluate_user_errors_are_one_line(tiny, tmp_path, capsys):
  from telugu_jax.dpo.__main__ import main as dpo_main
  from telugu_jax.evaluate.__main__ import main as eval_main

  # dpo: no usable pair (chosen == rejected everywhere): one line, and rejected.jsonl written
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": [{"role": "user", "content": u}], "chosen": a,
                                       "rejected": a}, ensure_ascii=False) + "\n" for i, (u, a) in enumerate(PAIRS)))
  work = tmp_path / "dpo"
  argv = ["--config", "dpo_demo", f"--config.base={tiny / 'base'}", f"--config.data.train={pairs}",
          "--config.data.validation=()", f"--config.workdir={work}", "--config.data.max_seq_len=64"]
  rc, lines = _cli(train_main, argv, capsys)
  assert rc == 2 and len(lines) == 1 and "no usable pair in 8 record(s)" in lines[0], lines
  assert len((work / "rejected.jsonl").read_text().splitlines()) == 8
  # dpo eval of a model with truncated weights
  assert dpo_main(["eval", "--model", str(tiny / "cut_weights"), "--pairs", str(pairs)]) == 2
  err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
  assert len(err) == 1 and "the weights cannot be read" in err[0], err
  # evaluate: a system whose tokenizer.model is cut short
  argv = ["--config", "eval", f"--config.output={tmp_path / 'eval'}", f"--config.systems.base={tiny / 'cut_tokenizer'}",
          f"--config.systems.sft={tiny / 'base'}", f"--config.data.heldout={tiny / 'train.jsonl'}",
          "--config.data.prose=", "--config.questions.limit=1", "--config.heldout_answers.limit=-1"]
  rc, lines = _cli(eval_main, argv, capsys)
  assert rc == 2 and len(lines) == 1 and "not a readable sentencepiece model" in lines[0], lines


def test_resume_falls_back_to_the_newest_checkpoint_that_restores(tiny, tmp_path, capsys):
  """Item 4: a latest checkpoint cut short (a kill or a full disk) is skipped with its reason, moved aside, and the
  run resumes from the older intact one (before: a 98-line tensorstore traceback). Item 5: the .tmp-model-*
  folder a kill during export leaves is removed by the next export."""
  cfg = tiny_full_config(tmp_path, tiny / "train.jsonl", tiny / "base" / "tokenizer", steps=4, save_every=2)
  train(cfg)
  run = tmp_path / "run"
  assert {"2", "4"} <= set(os.listdir(run / "checkpoints"))
  for root, _, files in os.walk(run / "checkpoints" / "4" / "state"):
    for f in files:
      _halve(os.path.join(root, f))
  (run / ".tmp-model-killed").mkdir()
  capsys.readouterr()
  cfg.train.max_steps = 6
  result = train(cfg)
  out = capsys.readouterr().out
  assert result.steps == 6
  assert re.search(r"checkpoint step 4 in .* cannot be restored \(.+\); skipped .*resuming from step 2", out), out
  assert (run / "checkpoints-skipped" / "4").is_dir() and "4" in os.listdir(run / "checkpoints")  # saved again
  assert not (run / ".tmp-model-killed").exists()
  steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
  assert steps == [1, 2, 3, 4, 5, 6]
  # nothing restores: one error that says why for each step, and nothing is moved
  for step in os.listdir(run / "checkpoints"):
    for root, _, files in os.walk(run / "checkpoints" / step / "state"):
      for f in files:
        _halve(os.path.join(root, f))
  cfg.train.max_steps = 8
  with pytest.raises(TrainingError, match=r"no checkpoint in .* can be restored \(step 6: .*; step 4: "):
    train(cfg)
  assert sorted(os.listdir(run / "checkpoints-skipped")) == ["4"]
