"""Two trainer processes under jax.distributed on 127.0.0.1 (gloo on CPU, 2 fake devices each): the run
finishes and writes one model; its losses equal one process fed the same per-process rows; validation with
shards of different lengths works; kill -9 of both and a restart continue exactly; LoRA and full."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from telugu_jax.data.records import Conversation, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Questions and two-sentence answers written for this test (long enough that two never share a 64-token row).
PAIRS = [
    ("ఉదయం ఏమి చేస్తావు?", "నేను ఉదయం ఆరు గంటలకు నిద్ర లేస్తాను. తర్వాత నీళ్ళు తాగుతాను."),
    ("మీ ఊరిలో ఏముంది?", "మా ఊరిలో ఒక పెద్ద చెరువు ఉంది. చెరువు చుట్టూ చెట్లు ఉన్నాయి."),
    ("వర్షాకాలంలో రైతులు ఏం చేస్తారు?", "వర్షాకాలంలో రైతులు వరి నాట్లు వేస్తారు. పొలాలు పచ్చగా ఉంటాయి."),
    ("తెలంగాణ రాజధాని ఏది?", "హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని. అది పెద్ద నగరం."),
    ("గోదావరి ఎక్కడ పుడుతుంది?", "గోదావరి నది మహారాష్ట్రలో పుడుతుంది. బంగాళాఖాతంలో కలుస్తుంది."),
    ("పిల్లలు ఏం తినాలి?", "పిల్లలు బడికి వెళ్ళే ముందు అల్పాహారం తినాలి. పాలు కూడా తాగాలి."),
    ("సంక్రాంతికి ఏం చేస్తారు?", "సంక్రాంతి పండుగకు ఇంటి ముందు ముగ్గులు వేస్తారు. పిండి వంటలు చేస్తారు."),
    ("ఆరోగ్యానికి ఏం చేయాలి?", "ఆరోగ్యంగా ఉండాలంటే రోజూ నీళ్ళు ఎక్కువగా తాగాలి. నడక కూడా మంచిది."),
    ("సూర్యుడు ఎక్కడ ఉదయిస్తాడు?", "సూర్యుడు తూర్పున ఉదయిస్తాడు. పడమర అస్తమిస్తాడు."),
    ("అమ్మ ఏం వండుతోంది?", "అమ్మ వంటింట్లో పప్పు, అన్నం వండుతోంది. చారు కూడా చేస్తోంది."),
    ("రేపు బడిలో ఏముంది?", "రేపు మా బడిలో ఆటల పోటీలు జరుగుతాయి. నేను పరుగులో పాల్గొంటాను."),
    ("చెట్లు ఏమిస్తాయి?", "చెట్లు మనకు నీడను, పండ్లను ఇస్తాయి. ప్రాణవాయువును కూడా ఇస్తాయి."),
]
STEPS = 6
N_VAL = 6   # validation records: the two shards pack into 2 and 1 batches (checked in the test)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def mh_data(tmp_path_factory, sp_tokenizer):
  d = tmp_path_factory.mktemp("multihost")
  write_jsonl(d / "train.jsonl", [Conversation.single(f"t{i}", u, a) for i, (u, a) in enumerate(PAIRS)])
  write_jsonl(d / "val.jsonl", [Conversation.single(f"v{i}", u, a) for i, (u, a) in enumerate(PAIRS[:N_VAL])])
  sp_tokenizer.save(d / "tok")
  return d


def overrides(d, workdir, *extra):
  return [f"--config.workdir={workdir}", "--config.base=", f"--config.tokenizer={d / 'tok'}", "--config.mode=full",
          "--config.model.preset=tiny", f"--config.data.train={d / 'train.jsonl'}",
          f"--config.data.validation={d / 'val.jsonl'}", "--config.data.max_seq_len=64",
          "--config.data.batch_size=4", "--config.data.num_packing_bins=2", "--config.optim.lr=1e-3",
          "--config.optim.warmup_steps=2", f"--config.train.max_steps={STEPS}", "--config.train.dtype=float32",
          "--config.train.frozen_dtype=float32", "--config.train.log_every=1", "--config.train.eval_every=3",
          "--config.train.save_every=3", "--config.train.async_checkpoint=False", *extra]


def launch(args: list[str], log_prefix) -> list[subprocess.Popen]:
  port = free_port()
  procs = []
  for i in range(2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
           # The suite's compilation cache: the reference, killed and resumed runs compile the same steps.
           "JAX_COMPILATION_CACHE_DIR": os.path.join(REPO, ".jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    log = open(f"{log_prefix}.{i}.log", "w")
    procs.append(subprocess.Popen([sys.executable, "-m", "telugu_jax.train", "--config", "lora", *args], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def finish(procs, log_prefix, timeout=300):
  for i, p in enumerate(procs):
    assert p.wait(timeout=timeout) == 0, open(f"{log_prefix}.{i}.log").read()[-3000:]


def logged(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return ({r["step"]: r["loss"] for r in rows if "loss" in r},
          {r["step"]: r["val_loss"] for r in rows if "val_loss" in r})


def one_process_reference(d, tmp_path, *extra):
  """The same run in this one process on 4 devices, each step's batch put together from the rows that the
  loader gives process 0 and process 1 of 2; validation over the whole file in one shard."""
  import jax

  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.config import load_config
  from telugu_jax.data import loader as L
  from telugu_jax.model import Llama
  from telugu_jax.train import (
    RunSettings,
    evaluate_dataset,
    init_state,
    jit_steps,
    load_base,
    make_optimizer,
    make_run_mesh,
    sft_task,
  )
  from telugu_jax.train.sharding import shard_batch
  from telugu_jax.train.tasks import sft_summary

  run = RunSettings.from_config(load_config("lora", overrides(d, tmp_path / "ref", *extra)))
  start = load_base(run)
  mesh = make_run_mesh(run.mesh.__class__(shape=(1, -1, 1), devices=4))
  model = Llama(start.model_cfg, lora=run.lora)
  tx, schedule = make_optimizer(run.optim, STEPS)
  state, shardings = init_state(model, start.params, tx, mesh, mode=run.mode, seed=run.train.seed,
                                frozen_dtype=run.train.frozen_dtype)
  p_train, p_eval, _ = jit_steps(*sft_task().make_steps(model, tx, run, schedule), shardings, mesh)
  fmt = ChatFormat(start.tokenizer)
  cfg = L.LoaderConfig(max_seq_len=64, batch_size=4, packing=True, num_packing_bins=2, shuffle=True, seed=0,
                       num_epochs=None)
  shards = [iter(L.sft_dataset(str(d / "train.jsonl"), fmt, cfg, process_index=p, process_count=2)) for p in (0, 1)]
  eval_cfg = L.LoaderConfig(max_seq_len=64, batch_size=4, packing=True, num_packing_bins=2, shuffle=False,
                            num_epochs=1)
  losses, vals = {}, {}
  for step in range(1, STEPS + 1):
    parts = [next(s) for s in shards]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    state, metrics = p_train(state, shard_batch(batch, mesh))
    losses[step] = float(jax.device_get(metrics["loss"]))
    if step % 3 == 0:
      ds = L.sft_dataset(str(d / "val.jsonl"), fmt, eval_cfg, process_index=0, process_count=1)
      vals[step] = sft_summary(evaluate_dataset(lambda b, s=state: p_eval(s, shard_batch(b, mesh)), ds))["val_loss"]
  return losses, vals


def test_two_processes_equal_one_and_resume_exactly_after_kill(mh_data, tmp_path):
  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.data import loader as L
  from telugu_jax.tokenizer import load_tokenizer

  # The premise of the uneven-validation case: the two validation shards pack into different batch counts.
  fmt = ChatFormat(load_tokenizer(str(mh_data / "tok")))
  eval_cfg = L.LoaderConfig(max_seq_len=64, batch_size=4, packing=True, num_packing_bins=2, shuffle=False,
                            num_epochs=1)
  counts = [sum(1 for _ in L.sft_dataset(str(mh_data / "val.jsonl"), fmt, eval_cfg, process_index=p,
                                         process_count=2)) for p in (0, 1)]
  assert counts[0] != counts[1], counts

  ref_dir, killed_dir = tmp_path / "two", tmp_path / "killed"
  ref = launch(overrides(mh_data, ref_dir), tmp_path / "two")
  killed = launch(overrides(mh_data, killed_dir), tmp_path / "killed")
  deadline = time.time() + 300
  while not (killed_dir / "checkpoints" / "3" / "_CHECKPOINT_METADATA").exists() and time.time() < deadline \
      and all(p.poll() is None for p in killed):
    time.sleep(0.05)
  assert all(p.poll() is None for p in killed), "the run ended before it could be killed"
  for p in killed:
    p.send_signal(signal.SIGKILL)
  for p in killed:
    p.wait()
  finish(ref, tmp_path / "two")
  resumed = launch(overrides(mh_data, killed_dir), tmp_path / "resumed")
  finish(resumed, tmp_path / "resumed")
  assert "resumed at step 3" in open(f"{tmp_path / 'resumed'}.0.log").read()

  losses, vals = logged(ref_dir)
  assert sorted(losses) == list(range(1, STEPS + 1)) and sorted(vals) == [3, 6]   # each step once
  assert os.path.isfile(ref_dir / "model" / "model.json")
  assert not [n for n in os.listdir(ref_dir) if n.startswith(".tmp-")]         # one writer, nothing left over
  want_losses, want_vals = one_process_reference(mh_data, tmp_path)
  for step in losses:
    np.testing.assert_allclose(losses[step], want_losses[step], rtol=1e-5, err_msg=f"step {step}")
  for step in vals:
    np.testing.assert_allclose(vals[step], want_vals[step], rtol=1e-5, err_msg=f"val at step {step}")
  got, _ = logged(killed_dir)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(4, STEPS + 1):                # after the resume: the very same numbers
    assert got[step] == losses[step], (step, got[step], losses[step])


def test_two_processes_lora(mh_data, tmp_path):
  import jax

  from telugu_jax.model import Llama, LlamaConfig
  from telugu_jax.model.io import load_model, save_model
  from telugu_jax.tokenizer import load_tokenizer

  tok = load_tokenizer(str(mh_data / "tok"))
  cfg = LlamaConfig.preset("tiny", vocab_size=tok.vocab_size)
  params = jax.jit(Llama(cfg).init_variables)(jax.random.PRNGKey(1))["params"]
  save_model(tmp_path / "base", cfg, params=jax.device_get(params), tokenizer=tok)
  lora = ("--config.mode=lora", f"--config.base={tmp_path / 'base'}", "--config.tokenizer=", "--config.lora.rank=4",
          "--config.optim.lr=1e-2")
  procs = launch(overrides(mh_data, tmp_path / "lora", *lora), tmp_path / "lora")
  finish(procs, tmp_path / "lora")
  losses, vals = logged(tmp_path / "lora")
  want_losses, want_vals = one_process_reference(mh_data, tmp_path, *lora)
  for step in losses:
    np.testing.assert_allclose(losses[step], want_losses[step], rtol=1e-5, err_msg=f"step {step}")
  for step in vals:
    np.testing.assert_allclose(vals[step], want_vals[step], rtol=1e-5)
  assert losses[STEPS] < losses[1]
  model = load_model(tmp_path / "lora" / "model")
  assert model.lora_config.rank == 4 and model.meta["base_abs"] == str(tmp_path / "base")
