"""DPO fixtures: the rule-made demo pairs, and one short DPO run on the shared smoke SFT model, started the
way a user starts it (`python -m telugu_jax.train --config configs/dpo.py` + overrides, a fresh process)."""

import os
import subprocess
import sys

import pytest

from tests.data.conftest import fake_openai  # noqa: F401 - the data tests' loopback server, for the judge

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DPO_STEPS = 20
BETA = 0.3


@pytest.fixture(scope="session")
def demo_prefs(tmp_path_factory):
  from telugu_jax.dpo.demo import prepare_demo_pairs

  # The extended conversations: 53 held-out pairs fit 256 tokens (of 80), so one pair is 1.9 points of held-out
  # accuracy, not 4.8.
  return prepare_demo_pairs(str(tmp_path_factory.mktemp("prefs")), extended=True)


@pytest.fixture(scope="session")
def smoke_dpo(smoke_run, demo_prefs, tmp_path_factory):
  """Workdir of a 20-step LoRA DPO run on the smoke SFT adapter. lr 2e-3, far above configs/dpo.py's 5e-6,
  because this is a 0.25M-parameter model and 20 steps (measured on the demo pairs: 1e-3 barely moves the
  held-out accuracy in 20 steps, 2e-2 diverges)."""
  import jax

  workdir = tmp_path_factory.mktemp("dpo") / "run"
  overrides = {"workdir": workdir, "base": smoke_run["sft"], "data.train": (demo_prefs["train"],),
               "data.validation": (demo_prefs["val"],), "data.max_seq_len": 256, "data.batch_size": 8,
               "lora.rank": 8, "lora.alpha": 16.0, "optim.lr": 2e-3, "optim.warmup_steps": 2, "dpo.beta": BETA,
               "train.max_steps": DPO_STEPS, "train.dtype": "float32", "train.frozen_dtype": "float32",
               "train.log_every": 1, "train.eval_every": DPO_STEPS, "train.save_every": DPO_STEPS,
               "train.async_checkpoint": False, "mesh.devices": 1}
  args = [sys.executable, "-m", "telugu_jax.train", "--config", os.path.join(REPO, "configs", "dpo.py")]
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",
         "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or ""}
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return {"workdir": str(workdir), "model": str(workdir / "model"), "stdout": out.stdout, "beta": BETA}
