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


def _run(argv):
  import benchmark

  return benchmark.main(argv)


def test_decode_suite_rows_and_ratios():
  rows = _run(["--suite", "decode", "--presets", "tiny", "--batches", "1,2", "--prompt-len", "8", "--new-tokens", "4",
               "--repeats", "1"])
  assert [r["batch"] for r in rows] == [1, 2]
  for r in rows:
    for k in ("jax_prefill_tok_s", "jax_decode_tok_s", "hf_prefill_tok_s", "hf_decode_tok_s"):
      assert r[k] > 0
    assert r["decode_ratio"] == pytest.approx(r["jax_decode_tok_s"] / r["hf_decode_tok_s"])


def test_convert_suite_measures_both_directions():
  rows = _run(["--suite", "convert", "--preset", "tiny", "--dtypes", "float32"])
  assert [r["step"] for r in rows] == ["convert", "export hf"]
  for r in rows:
    assert r["seconds"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
    assert r["weights_mb"] == pytest.approx(0.04488e6 * 4 / 2**20, rel=0.01)  # tiny preset, fp32


def test_data_suite_accounts_for_every_record():
  rows = {r["stage"]: r for r in _run(["--suite", "data", "--records", "300"])}
  for stage in ("clean", "dedupe"):
    r = rows[stage]
    dropped = sum(int(part.split()[-1]) for part in r["dropped"].split(", ") if part)
    assert r["records_in"] == r["out"] + dropped > r["out"] > 0  # the generator plants bad records
  assert rows["dedupe"]["records_in"] == rows["clean"]["out"]
  assert rows["clean+dedupe"]["out"] == rows["dedupe"]["out"]


def test_loader_suite_rows():
  rows = _run(["--suite", "loader", "--examples", "300", "--bins", "1,4", "--min-examples", "300"])
  assert [(r["packing"], r["bins"]) for r in rows] == [("first_fit", 1), ("first_fit", 4), ("best_fit", 1),
                                                        ("best_fit", 4)]
  for r in rows:
    assert 0 < r["packing_efficiency"] <= 1 and r["tokens_per_s"] > 0 and r["batches"] >= 1


def test_serve_suite_counts_every_users_tokens():
  rows = _run(["--suite", "serve", "--preset", "tiny", "--users", "1,2", "--max-tokens", "8", "--repeats", "1"])
  assert [r["users"] for r in rows] == [1, 2]
  for r in rows:
    assert r["tokens"] == r["users"] * 8 and r["agg_tok_s"] > 0


def test_sft_suite_runs_the_real_trainer():
  rows = _run(["--suite", "sft", "--preset", "smoke", "--pairs", "40", "--epochs", "1", "--seq", "1024", "--batch", "2",
               "--dtype", "float32", "--vocab", "1024", "--tokenizer-vocab", "400", "--pair-chars", "300"])
  (r,) = rows
  assert r["rejected"] == 0 and r["steps"] >= 1 and r["tokens_per_pair"] > 20
  parts = r["run_setup_s"] + r["run_first_step_s"] + r["run_later_steps_s"] + r["run_save_export_s"]
  assert parts == pytest.approx(r["run_total_s"], rel=1e-6)
  assert r["wall_s"] >= r["run_total_s"] > 0


def test_profile_trace_and_summary(tmp_path):
  """--profile writes a trace that profile_summary.py turns into per-op device time; the time it finds per
  step is the step's own (a summary of the wrong trace or a wrong step count would not fit in it)."""
  import profile_summary

  prof = tmp_path / "prof"
  (row,) = _run(["--suite", "train", "--config", "smoke", "--mode", "full", "--steps", "2", "--warmup", "1",
                 "--batch", "2", "--seq", "32", "--profile", str(prof)])
  rows = profile_summary.summarise(profile_summary.load_events(str(prof)), steps=2)
  per_step_ms = sum(t for _, t, _ in rows)
  assert len(rows) > 5 and 0 < per_step_ms < 3 * row["step_s"] * 1000
  hlo = ('  %fusion.3 = f32[4]{0} fusion(%p), kind=kLoop, metadata={op_name="jit(train_step)/while/body/closed_call/'
         'transpose(jvp(Llama))/layers_3/mlp/mul"}\n')
  assert profile_summary.hlo_op_names(hlo) == {"fusion.3": "transpose(jvp(Llama))/layers_N/mlp/mul"}


def test_gpu_script_parses_and_rejects_an_unknown_part(tmp_path):
  """scripts/bench_gpu.sh only runs on a GPU machine; here: it is valid bash and names its parts."""
  script = os.path.join(REPO, "scripts", "bench_gpu.sh")
  assert subprocess.run(["bash", "-n", script]).returncode == 0
  proc = subprocess.run(["bash", script, "nope", str(tmp_path)], capture_output=True, text=True,
                        env={**os.environ, "PYTHON": sys.executable})
  assert proc.returncode == 2 and "unknown part nope" in proc.stderr
