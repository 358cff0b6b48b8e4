"""The trainer's CPU recipe (telugu_jax/train/cpu.py): what it picks, when it stays out of the way, and that a
default `python -m telugu_jax.train` on a CPU runs with it and trains the same model as XLA out of the box."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from telugu_jax.config import load_config
from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.train import cpu
from telugu_jax.train.core import attention_block
from telugu_jax.train.settings import RunSettings
from tests.train.test_multihost import PAIRS

GiB = 2**30


def test_one_device_per_core_when_the_batch_splits_and_the_mesh_is_the_default():
  p = cpu.plan((8,), (1, -1, 1), 0, n_cores=2, ynn=True, replica_bytes=GiB, memory=64 * GiB)
  assert p.devices == 2 and p.mesh_shape == (-1, 1, 1)
  assert p.xla_flags.split() == ["--xla_force_host_platform_device_count=2", cpu.EIGEN_OFF, cpu.YNN_ELTWISE]


@pytest.mark.parametrize("kw, why", [
    (dict(batch_sizes=(6,), n_cores=4), "does not split"),
    (dict(mesh_devices=1), "mesh set in the config"),
    (dict(mesh_shape=(-1, 1, 1)), "mesh set in the config"),
    (dict(n_cores=1), "1 core"),
    (dict(replica_bytes=5 * GiB, memory=32 * GiB), "quarter of the memory"),   # 2 x 5 GiB > 8 GiB
])
def test_one_device_on_all_cores_otherwise(kw, why):
  args = dict(batch_sizes=(8,), mesh_shape=(1, -1, 1), mesh_devices=0, n_cores=2, ynn=False,
              replica_bytes=GiB, memory=64 * GiB)
  p = cpu.plan(**{**args, **kw})
  # One device keeps XLA's shared thread pool (no EIGEN_OFF), the config's mesh, no device-count flag.
  assert p.devices == 1 and p.mesh_shape is None and p.xla_flags == "" and why in p.why


def test_the_ynn_flag_only_when_this_jaxlib_knows_it():
  assert cpu.has_xla_flag("--xla_cpu_multi_thread_eigen=false")
  assert not cpu.has_xla_flag("--xla_cpu_no_such_flag_in_any_build")
  assert cpu.YNN_ELTWISE in cpu.plan((8,), (1, -1, 1), 1, 2, ynn=True).flags
  assert cpu.YNN_ELTWISE not in cpu.plan((8,), (1, -1, 1), 1, 2, ynn=False).flags


def test_no_ynn_fusion_for_a_model_whose_working_copies_would_not_fit():
  small = cpu.plan((8,), (1, -1, 1), 0, 2, ynn=True, replica_bytes=GiB, memory=24 * GiB, weight_bytes=21 * 2**20)
  big = cpu.plan((1,), (1, -1, 1), 0, 2, ynn=True, replica_bytes=GiB, memory=24 * GiB, weight_bytes=int(1.34 * GiB))
  assert cpu.YNN_ELTWISE in small.flags and cpu.YNN_ELTWISE not in big.flags   # 5M demo vs 300m on 24 GiB


@pytest.mark.parametrize("env, applied", [
    ({}, True),
    ({"XLA_FLAGS": ""}, False),                      # the user's XLA_FLAGS, even empty, are kept as they are
    ({"TELUGU_JAX_CPU_RECIPE": "0"}, False),
    ({"JAX_PLATFORMS": "cuda"}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, False),
    ({"SLURM_NTASKS": "4"}, False),
])
def test_apply_leaves_the_environment_alone_when_it_should(monkeypatch, env, applied):
  for k in ("XLA_FLAGS", "TELUGU_JAX_CPU_RECIPE", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
            "JOBSET_NAME"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  before = os.environ.get("XLA_FLAGS")
  p = cpu.apply(RunSettings.from_config(load_config("lora", ["--config.data.batch_size=8"])))
  assert (p is not None) == applied
  assert os.environ.get("XLA_FLAGS") == (p.xla_flags if applied else before)


def test_auto_attention_blocks_on_cpu_only():
  assert attention_block(-1, 256, 256, "cpu") == 32        # demo: 8 blocks of 32
  assert attention_block(-1, 1024, 1024, "cpu") == 128     # 8 blocks, so the unrolled graph stays small
  assert attention_block(-1, 256, 1024, "cpu") == 0        # 300m at 256 tokens: attention is a small share
  assert attention_block(-1, 32, 16, "cpu") == 0           # one block is one pass
  assert attention_block(-1, 1024, 256, "gpu") == 0
  assert attention_block(0, 256, 256, "cpu") == 0 and attention_block(16, 256, 1024, "gpu") == 16


def _train(tmp_path, name, env_extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}   # the suite's 8 fake devices off
  env.update(JAX_PLATFORMS="cpu", **env_extra)
  work = tmp_path / name
  out = subprocess.run(
      [sys.executable, "-m", "telugu_jax.train", "--config", "lora", f"--config.workdir={work}", "--config.base=",
       f"--config.tokenizer={tmp_path / 'tok'}", "--config.mode=full", "--config.model.preset=tiny",
       f"--config.data.train={tmp_path / 'train.jsonl'}", "--config.data.validation=()",
       "--config.data.max_seq_len=64", "--config.data.batch_size=4", "--config.data.num_packing_bins=2",
       "--config.optim.warmup_steps=2", "--config.train.max_steps=4", "--config.train.dtype=float32",
       "--config.train.frozen_dtype=float32", "--config.train.log_every=1", "--config.train.save_every=100",
       "--config.train.async_checkpoint=False"],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if "loss" in r]
  return out.stdout, json.loads((work / "config.json").read_text()), losses


def test_the_default_cpu_run_uses_the_recipe_and_trains_the_same_model(tmp_path, sp_tokenizer):
  """`python -m telugu_jax.train` with no XLA_FLAGS: the recipe is printed and recorded (mesh), and the losses
  equal a run with XLA_FLAGS="" (XLA out of the box: one device, shared thread pool) to float32 noise."""
  write_jsonl(tmp_path / "train.jsonl", [Conversation.single(f"t{i}", u, a) for i, (u, a) in enumerate(PAIRS)])
  sp_tokenizer.save(tmp_path / "tok")
  stdout, config, losses = _train(tmp_path, "recipe", {})
  n = cpu.cores()
  if n > 1 and 4 % n == 0:
    assert f"one device per core ({n})" in stdout and config["config"]["mesh"]["shape"] == [-1, 1, 1]
  assert "CPU recipe:" in stdout
  _, plain_config, plain = _train(tmp_path, "plain", {"XLA_FLAGS": ""})
  assert plain_config["config"]["mesh"]["shape"] == [1, -1, 1]
  assert len(losses) == len(plain) == 4
  np.testing.assert_allclose(losses, plain, rtol=2e-5)


def test_an_installed_accelerator_plugin_means_not_cpu_only(tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  (tmp_path / "jax_plugins").mkdir()                   # a namespace package with nothing in it
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, "jax_plugins", raising=False)
  assert cpu.cpu_only() == (importlib.util.find_spec("libtpu") is None
                            and not list(importlib.metadata.entry_points(group="jax_plugins")))
  (tmp_path / "jax_plugins" / "xla_cuda12").mkdir()
  (tmp_path / "jax_plugins" / "xla_cuda12" / "__init__.py").write_text("")
  monkeypatch.delitem(sys.modules, "jax_plugins", raising=False)
  assert not cpu.cpu_only()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert cpu.cpu_only()
