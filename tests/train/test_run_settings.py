"""The loop's settings that the reference tests leave at float32 and off: bf16 LoRA (the default dtype),
LoRA dropout, remat and gradient accumulation through the loop; one compile per step function; the
exported model of a run with validation is its best checkpoint."""

import json
import os

import jax
import numpy as np
import pytest

from telugu_jax.config import ConfigError, load_config
from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.train.loop import train_and_evaluate
from telugu_jax.train.settings import RunSettings


def smoke(smoke_run, workdir, *overrides, name="smoke"):
  """configs/smoke.py (LoRA on the suite's smoke base) with `overrides`, run through the loop."""
  w = smoke_run["workdir"]
  c = load_config(name, [f"--config.workdir={workdir}", f"--config.base={os.path.join(w, 'base')}",
                         f"--config.data.train={os.path.join(w, 'data', 'train.jsonl')}",
                         f"--config.data.validation={os.path.join(w, 'data', 'val.jsonl')}",
                         "--config.train.max_steps=3", "--config.train.log_every=1", "--config.train.eval_every=3",
                         "--config.train.save_every=3", *overrides])
  return train_and_evaluate(RunSettings.from_config(c), log_to_console=False)


def losses(workdir):
  return [r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if "loss" in r]


def test_bf16_lora_trains_close_to_float32_and_compiles_once(smoke_run, tmp_path):
  from telugu_jax.model.io import load_model

  f32 = smoke(smoke_run, tmp_path / "f32")
  bf16 = smoke(smoke_run, tmp_path / "bf16", "--config.train.dtype=bfloat16", "--config.train.frozen_dtype=bfloat16")
  assert f32.traces == bf16.traces == {"train_step": 1, "eval_step": 1}
  a, b = losses(f32.workdir), losses(bf16.workdir)
  assert len(a) == len(b) == 3 and a != b       # bf16 really ran in bf16
  np.testing.assert_allclose(b, a, rtol=3e-2)
  assert abs(bf16.best_val_loss - f32.best_val_loss) < 3e-2 * f32.best_val_loss
  lora = load_model(bf16.model_dir).variables["lora"]
  assert {x.dtype for x in jax.tree_util.tree_leaves(lora)} == {np.dtype("float32")}   # master weights


def test_lora_dropout_is_applied_and_reproducible(smoke_run, tmp_path):
  off = losses(smoke(smoke_run, tmp_path / "off").workdir)
  on = losses(smoke(smoke_run, tmp_path / "on", "--config.lora.dropout=0.5").workdir)
  again = losses(smoke(smoke_run, tmp_path / "again", "--config.lora.dropout=0.5").workdir)
  assert on[0] == off[0]          # step 1: B = 0, so the dropped LoRA input changes nothing yet
  assert on[2] != off[2]          # later steps see a dropped-out adapter
  assert on == again              # the dropout rng is part of the state: a rerun is identical


def test_remat_and_grad_accum_change_nothing_through_the_loop(smoke_run, tmp_path):
  full = ("--config.mode=full", "--config.optim.lr=1e-3")
  plain = smoke(smoke_run, tmp_path / "plain", *full)
  remat = smoke(smoke_run, tmp_path / "remat", *full, "--config.train.remat=True")
  accum = smoke(smoke_run, tmp_path / "accum", *full, "--config.train.grad_accum=2")
  assert plain.traces == remat.traces == accum.traces == {"train_step": 1, "eval_step": 1}
  np.testing.assert_allclose(losses(remat.workdir), losses(plain.workdir), rtol=1e-5)
  # The accumulated step sums the microbatches' summed losses and divides once by all assistant tokens,
  # so it equals one pass over the whole batch.
  np.testing.assert_allclose(losses(accum.workdir), losses(plain.workdir), rtol=1e-5)


def test_exported_model_is_the_best_checkpoint(tmp_path, sp_tokenizer):
  """Train on answers that contradict the validation answers: validation loss first falls (the format and the
  language), then rises (memorising the training answers). The exported model is the best checkpoint's
  weights, not the last state's; train.export=last keeps the old behaviour."""
  from telugu_jax.model.io import load_model
  from telugu_jax.train.checkpoint import RunCheckpoints

  questions = ["నీ పేరు ఏమిటి?", "ఆకాశం రంగు ఏమిటి?", "తెలంగాణ రాజధాని ఏది?", "ఒక పండు పేరు చెప్పు."]
  train_answers = ["నా పేరు సీత.", "ఆకాశం నీలంగా ఉంది.", "హైదరాబాదు.", "మామిడి పండు."]
  val_answers = ["నా పేరు చిట్టి.", "ఆకాశం మబ్బుగా ఉంది.", "తెలంగాణ రాజధాని హైదరాబాదు నగరం.", "అరటి పండు."]
  write_jsonl(tmp_path / "train.jsonl", [Conversation.single(f"t{i}", q, a)
                                         for i, (q, a) in enumerate(zip(questions, train_answers, strict=True))])
  write_jsonl(tmp_path / "val.jsonl", [Conversation.single(f"v{i}", q, a)
                                       for i, (q, a) in enumerate(zip(questions, val_answers, strict=True))])
  sp_tokenizer.save(tmp_path / "tok")

  def run(workdir, *extra):
    c = load_config("lora", [f"--config.workdir={workdir}", "--config.base=", f"--config.tokenizer={tmp_path / 'tok'}",
                             "--config.mode=full", "--config.model.preset=tiny",
                             f"--config.data.train={tmp_path / 'train.jsonl'}",
                             f"--config.data.validation={tmp_path / 'val.jsonl'}", "--config.data.max_seq_len=64",
                             "--config.data.batch_size=4", "--config.data.num_packing_bins=4", "--config.optim.lr=1e-2",
                             "--config.optim.warmup_steps=2", "--config.optim.weight_decay=0.0",
                             "--config.train.max_steps=60", "--config.train.dtype=float32",
                             "--config.train.frozen_dtype=float32", "--config.train.log_every=20",
                             "--config.train.eval_every=4", "--config.train.save_every=1000",
                             "--config.train.keep_latest=1", "--config.train.patience=4",
                             "--config.train.async_checkpoint=False", "--config.mesh.devices=1", *extra])
    return train_and_evaluate(RunSettings.from_config(c), log_to_console=False)

  result = run(tmp_path / "run")
  evals = {r["step"]: r["val_loss"] for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl"))
           if "val_loss" in r}
  best = min(evals, key=evals.get)
  assert best < result.steps, evals          # the run went on past its best evaluation (early stop or end)
  assert result.exported_step == best
  ckpts = RunCheckpoints(str(tmp_path / "run" / "checkpoints"), keep_latest=1, keep_best=1, async_save=False)
  assert ckpts.best_step() == best
  import orbax.checkpoint as ocp

  saved = ckpts.manager.restore(best, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  ckpts.close()
  exported = load_model(result.model_dir)
  assert exported.meta["trained_steps"] == best and exported.meta["run_steps"] == result.steps
  assert exported.meta["val_loss"] == pytest.approx(evals[best])
  jax.tree_util.tree_map(np.testing.assert_array_equal, exported.variables["params"], saved["trainable"]["params"])

  last = run(tmp_path / "last", "--config.train.export=last")
  assert last.exported_step == last.steps == result.steps
  assert load_model(last.model_dir).meta["trained_steps"] == last.steps


def test_export_setting_is_checked():
  with pytest.raises(Exception, match="train.export='newest'; choose 'best' or 'last'"):
    RunSettings.from_config(load_config("lora", ["--config.train.export=newest"]))
  with pytest.raises(ConfigError, match="valid keys here: .*export"):
    load_config("lora", ["--config.train.exprot=last"])


def test_chat_section_is_typed_and_resolved_against_the_start_model():
  from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
  from telugu_jax.train.errors import TrainingError
  from telugu_jax.train.tasks import run_template

  for name in ("lora", "full", "dpo", "smoke", "demo", "pretrain"):
    assert RunSettings.from_config(load_config(name)).chat == DEFAULT_TEMPLATE, name
  run = RunSettings.from_config(load_config("smoke", ["--config.chat.turn_sep= ", "--config.chat.user=ప్రశ్న:"]))
  assert run.chat == ChatTemplate(user="ప్రశ్న:", turn_sep=" ")
  with pytest.raises(ConfigError):
    load_config("smoke", ["--config.chat.system=x"])
  with pytest.raises(TrainingError, match="non-empty"):
    RunSettings.from_config(load_config("smoke", ["--config.chat.user="]))
  other = ChatTemplate(turn_sep=" | ")
  assert run_template(run, DEFAULT_TEMPLATE) == run.chat                      # SFT: the config's template
  assert run_template(run.replace(chat=DEFAULT_TEMPLATE), other) == other     # default config: the base's record
  assert run_template(run, run.chat, strict=True) == run.chat
  with pytest.raises(TrainingError, match="differs from the template the model was trained with"):
    run_template(run, other, strict=True)                                      # DPO on a model with another one


def test_model_directory_without_a_template_reads_as_the_default(tmp_path):
  from telugu_jax.chat_format import DEFAULT_TEMPLATE
  from telugu_jax.model import LlamaConfig
  from telugu_jax.model.io import load_model, save_model
  from tests.convert.conftest import random_variables

  cfg = LlamaConfig.tiny(vocab_size=64)
  save_model(tmp_path / "old", cfg, params=random_variables(cfg)["params"])
  meta = json.loads((tmp_path / "old" / "model.json").read_text())
  assert "chat_template" not in meta
  assert load_model(tmp_path / "old", with_tokenizer=False).chat_template == DEFAULT_TEMPLATE
