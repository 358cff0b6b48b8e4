"""The training loop end to end: overfitting, checkpoint retention, kill -9 and resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from telugu_jax.chat_format import ChatFormat
from telugu_jax.config import load_config
from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.train.checkpoint import RunCheckpoints
from telugu_jax.train.loop import TrainingError, train_and_evaluate
from telugu_jax.train.settings import RunSettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Eight short exchanges, written for this test.
PAIRS = [
    ("నీ పేరు ఏమిటి?", "నా పేరు చిట్టి."),
    ("ఆకాశం రంగు ఏమిటి?", "ఆకాశం నీలంగా ఉంటుంది."),
    ("రెండు మరియు మూడు ఎంత?", "ఐదు."),
    ("తెలంగాణ రాజధాని ఏది?", "హైదరాబాదు."),
    ("ఒక పండు పేరు చెప్పు.", "మామిడి పండు."),
    ("వారానికి ఎన్ని రోజులు?", "ఏడు రోజులు."),
    ("నమస్కారం!", "నమస్కారం, చెప్పండి."),
    ("నీళ్ళు ఎక్కడ దొరుకుతాయి?", "నదిలో, చెరువులో."),
]


def train(cfg):
  """One run of the loop from a (mutated) ConfigDict, as the CLI does it."""
  return train_and_evaluate(RunSettings.from_config(cfg), log_to_console=False)


def tiny_full_config(tmp_path, data, tok_dir, steps, **train_kw):
  c = load_config("lora")
  c.workdir = str(tmp_path / "run")
  c.base = ""
  c.tokenizer = str(tok_dir)
  c.mode = "full"
  c.model.preset = "tiny"
  c.data.train = (str(data),)
  c.data.validation = ()
  c.data.max_seq_len = 64
  c.data.batch_size = 4
  c.data.num_packing_bins = 4
  c.optim.lr = 1e-2
  c.optim.warmup_steps = 10
  c.optim.weight_decay = 0.0
  c.train.max_steps = steps
  c.train.dtype = "float32"
  c.train.frozen_dtype = "float32"
  c.train.log_every = 1
  c.train.save_every = 10_000
  c.train.async_checkpoint = False
  c.mesh.devices = 1
  for k, v in train_kw.items():
    c.train[k] = v
  return c


@pytest.fixture(scope="module")
def overfit_data(tmp_path_factory, sp_tokenizer):
  d = tmp_path_factory.mktemp("overfit")
  write_jsonl(d / "train.jsonl", [Conversation.single(f"o{i}", u, a) for i, (u, a) in enumerate(PAIRS)])
  sp_tokenizer.save(d / "tok")
  return d


def test_overfit_then_answers_and_stops(tmp_path, overfit_data, sp_tokenizer):
  from telugu_jax.generate import Generator, SamplingConfig
  from telugu_jax.model.io import load_model

  cfg = tiny_full_config(tmp_path, overfit_data / "train.jsonl", overfit_data / "tok", steps=300)
  cfg.train.log_every = 50
  cfg.train.sample_every = 300
  cfg.train.sample_prompts = (PAIRS[1][0],)
  result = train(cfg)
  log = [json.loads(line) for line in open(os.path.join(result.workdir, "metrics.jsonl"))]
  assert log[0]["loss"] > 3.0 and log[-1]["loss"] < 0.05, (log[0]["loss"], log[-1]["loss"])
  assert log[-1]["accuracy"] == 1.0  # every answer token (and every end token) is the argmax
  loaded = load_model(result.model_dir)
  fmt = ChatFormat(loaded.tokenizer)
  gen = Generator.from_loaded(loaded)
  prompts = [fmt.encode_prompt(Conversation.single("x", u, a).turns[:1]) for u, a in PAIRS]
  outs = gen.generate(prompts, SamplingConfig(max_new_tokens=24), stop_strings=fmt.template.stop_strings)
  for (_, answer), out in zip(PAIRS, outs, strict=True):
    assert out.text.strip() == answer
    assert out.finish_reason == "eos"
  samples = [json.loads(line) for line in open(os.path.join(result.workdir, "samples.jsonl"))]
  assert samples == [{"step": 300, "prompt": PAIRS[1][0], "answer": PAIRS[1][1], "finish_reason": "eos"}]


def test_retention_keeps_latest_and_best(tmp_path):
  ckpts = RunCheckpoints(str(tmp_path / "ck"), keep_latest=2, keep_best=1, async_save=False)
  state = {"step": np.int32(0), "trainable": {"w": np.ones(3, np.float32)}, "opt_state": {},
           "rng": np.zeros(2, np.uint32)}
  val = {1: 3.0, 2: 1.0, 3: 2.5, 4: 2.0, 5: 4.0, 6: 3.5}  # lowest at step 2
  for step, v in val.items():
    ckpts.save(step, state, {"pos": step}, metrics={"val_loss": v}, force=True)
  ckpts.wait()
  assert sorted(ckpts.all_steps()) == [2, 5, 6]
  assert ckpts.best_step() == 2
  restored, data = ckpts.restore(6, jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
  assert data == {"pos": 6} and np.array_equal(restored["trainable"]["w"], state["trainable"]["w"])
  ckpts.close()
  # A restarted run (new manager) still knows which step was best and keeps it.
  again = RunCheckpoints(str(tmp_path / "ck"), keep_latest=2, keep_best=1, async_save=False)
  assert again.best_step() == 2
  again.save(7, state, None, metrics={"val_loss": 2.2}, force=True)
  again.save(8, state, None, metrics=None, force=True)
  again.wait()
  assert sorted(again.all_steps()) == [2, 7, 8]
  again.close()


CONFIG_TEMPLATE = """
import json, sys
sys.path.insert(0, {configs!r})
from lora import get_config as base


def get_config():
  c = base()
  for dotted, value in json.loads({overrides!r}).items():
    *sections, key = dotted.split(".")
    node = c
    for name in sections:
      node = node[name]
    node[key] = tuple(value) if isinstance(value, list) else value
  return c
"""


def _run_cli(cfg_path, workdir, extra=(), env=None):
  cmd = [sys.executable, "-m", "telugu_jax.train", f"--config={cfg_path}", f"--config.workdir={workdir}", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(workdir):
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    r = json.loads(line)
    if "loss" in r:
      out[r["step"]] = r["loss"]
  return out


def test_kill_and_resume_gives_identical_losses(tmp_path, overfit_data):
  """A run killed with SIGKILL after its step-10 checkpoint, restarted, logs the losses an uninterrupted
  run logs at the same steps (bit-exact on CPU float32: same batches, same rng per step)."""
  overrides = {"base": "", "tokenizer": str(overfit_data / "tok"), "mode": "full", "model.preset": "tiny",
               "data.train": [str(overfit_data / "train.jsonl")], "data.validation": [], "data.max_seq_len": 32,
               "data.batch_size": 2, "optim.lr": 1e-3, "optim.warmup_steps": 2, "train.max_steps": 16,
               "train.dtype": "float32", "train.frozen_dtype": "float32", "train.log_every": 1,
               "train.save_every": 5, "train.async_checkpoint": False, "mesh.devices": 1}
  cfg_file = tmp_path / "cfg.py"
  cfg_file.write_text(CONFIG_TEMPLATE.format(configs=os.path.join(REPO, "configs"), overrides=json.dumps(overrides)))
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  ref = _run_cli(cfg_file, tmp_path / "ref", env=env)
  killed = _run_cli(cfg_file, tmp_path / "killed", env=env)
  deadline = time.time() + 240
  ckpt10 = tmp_path / "killed" / "checkpoints" / "10"
  while not ckpt10.is_dir() and killed.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert killed.poll() is None, killed.stdout.read()  # still running when its step-10 checkpoint appeared
  time.sleep(0.3)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert ref.wait(timeout=240) == 0, ref.stdout.read()
  resumed = _run_cli(cfg_file, tmp_path / "killed", env=env)
  out = resumed.stdout.read()
  assert resumed.wait(timeout=240) == 0, out
  assert "resumed at step" in out
  want, got = _losses(tmp_path / "ref"), _losses(tmp_path / "killed")
  assert set(want) == set(range(1, 17))
  for step in range(11, 17):
    assert got[step] == want[step], (step, got[step], want[step])


def test_missing_base_says_how_to_get_one(tmp_path, overfit_data):
  cfg = tiny_full_config(tmp_path, overfit_data / "train.jsonl", overfit_data / "tok", steps=2)
  cfg.mode = "lora"
  cfg.base = str(tmp_path / "nope")
  with pytest.raises(TrainingError, match="python -m telugu_jax.convert .*make demo"):
    train(cfg)


def test_cli_rejects_unknown_override(tmp_path):
  p = _run_cli(os.path.join(REPO, "configs", "lora.py"), tmp_path, extra=["--config.optim.lrr=1e-4"])
  out = p.stdout.read()
  assert p.wait(timeout=120) != 0
  assert "lrr" in out


def test_smoke_run_sft_beats_base(smoke_run):
  assert smoke_run["sft_ppl"]["tokens"] == smoke_run["base_ppl"]["tokens"] > 500
  assert smoke_run["sft_ppl"]["ppl"] < smoke_run["base_ppl"]["ppl"]
  assert os.path.isfile(os.path.join(smoke_run["sft"], "model.json"))


def test_resume_on_more_devices(tmp_path, overfit_data):
  """Checkpoints written on 1 device restore onto a 2-device mesh (new shardings); losses continue."""
  if jax.device_count() < 2:
    pytest.skip("needs the fake CPU devices of tests/conftest.py")
  cfg = tiny_full_config(tmp_path, overfit_data / "train.jsonl", overfit_data / "tok", steps=12,
                         save_every=4, keep_best=0)
  cfg.optim.lr = 1e-3
  train(cfg)
  want = _losses(cfg.workdir)
  import shutil

  shutil.rmtree(os.path.join(cfg.workdir, "checkpoints", "12"))  # as if killed after step 8's checkpoint
  cfg.mesh.devices, cfg.mesh.shape = 2, (2, 1, 1)
  result = train(cfg)
  assert result.steps == 12
  got = _losses(cfg.workdir)  # the later lines (steps 9-12, resumed) overwrite the first run's
  for step in range(9, 13):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5)


def test_nan_guard_names_step_and_checkpoint(tmp_path, overfit_data):
  from telugu_jax.train.loop import TrainingDiverged

  cfg = tiny_full_config(tmp_path, overfit_data / "train.jsonl", overfit_data / "tok", steps=20, save_every=2)
  cfg.optim.name, cfg.optim.lr, cfg.optim.clip_norm = "sgd", 1e30, 0.0
  with pytest.raises(TrainingDiverged, match=r"at step \d+; last good checkpoint: step \d+ in .*checkpoints"):
    train(cfg)


def test_early_stopping(tmp_path, overfit_data):
  cfg = tiny_full_config(tmp_path, overfit_data / "train.jsonl", overfit_data / "tok", steps=40, eval_every=2,
                         patience=2, min_delta=100.0)  # no evaluation can improve by 100 nats: stop after 3
  cfg.data.validation = (str(overfit_data / "train.jsonl"),)
  result = train(cfg)
  assert result.steps == 6
  evals = [json.loads(line) for line in open(os.path.join(result.workdir, "metrics.jsonl")) if "val_loss" in line]
  assert [e["step"] for e in evals] == [2, 4, 6]


@pytest.mark.slow
def test_300m_preset_runs_a_step_on_cpu(tmp_path):
  """The plan's 300M model fits and runs a LoRA and a full step on CPU with batch 1 (slow: ~1-2 min)."""
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import benchmark

  rows = benchmark.main(["--suite", "train", "--config", "300m", "--batch", "1", "--seq", "256", "--steps", "1",
                         "--warmup", "1"])
  assert {r["mode"] for r in rows} == {"lora", "full"} and all(r["tokens_per_s"] > 0 for r in rows)


def test_attention_kernel_choice():
  from telugu_jax.train.core import attention_kernel

  assert attention_kernel("auto", "bfloat16") == "xla"  # this CPU: no cuDNN
  assert attention_kernel("auto", "bfloat16", 64, backend="gpu") == "cudnn"
  assert attention_kernel("auto", "float32", 64, backend="gpu") == "xla"  # cuDNN's kernel is half precision only
  assert attention_kernel("auto", "bfloat16", 160, backend="gpu") == "xla"  # head size beyond its kernels
  assert attention_kernel("cudnn", "bfloat16") == "cudnn" and attention_kernel("xla", "float32") == "xla"
  with pytest.raises(TrainingError, match="'auto', 'xla' or 'cudnn'"):
    attention_kernel("flash", "bfloat16")
