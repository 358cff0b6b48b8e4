"""The benchmark harness runs and reports sane rows (correctness of the harness, not speed)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


def test_train_suite_jax_and_torch(tmp_path):
  import benchmark

  out = tmp_path / "bench.jsonl"
  rows = benchmark.main(["--suite", "train", "--config", "smoke", "--compare", "torch", "--mode", "lora",
                         "--steps", "1", "--warmup", "1", "--batch", "2", "--seq", "32", "--out", str(out)])
  assert [r["framework"] for r in rows] == ["jax", "torch+peft"]
  for r in rows:
    assert r["tokens_per_s"] > 0 and r["peak_mem_MB"] > 50
    assert r["loss_tokens_per_s"] == pytest.approx(r["tokens_per_s"] / 2)
    assert r["trainable_M"] < r["params_M"]  # LoRA trains a fraction
  assert rows[0]["trainable_M"] == pytest.approx(rows[1]["trainable_M"], rel=1e-6)  # same adapter size both sides
  assert rows[0]["speedup_vs_torch"] == pytest.approx(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"])
  lines = out.read_text().splitlines()
  assert len(lines) == 2 and '"suite": "train"' in lines[0] and '"jax":' in lines[0]


def test_unknown_suite_is_a_clear_error():
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--suite", "nope"],
                        capture_output=True, text=True)
  assert proc.returncode != 0 and "invalid choice" in proc.stderr
