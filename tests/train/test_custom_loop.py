"""docs/custom_loop.md's loop, run exactly as written (3 steps on the suite's smoke base), so the example
cannot rot: it trains, checkpoints, evaluates and exports a model that loads."""

import os
import re

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_blocks(path):
  return re.findall(r"```python\n(.*?)```", open(path, encoding="utf-8").read(), flags=re.S)


def test_custom_loop_doc_runs(smoke_run, tmp_path, capsys):
  from telugu_jax.model.io import load_model

  blocks = code_blocks(os.path.join(REPO, "docs", "custom_loop.md"))
  assert len(blocks) == 2 and "OVERRIDES" in blocks[0] and "for step in range" in blocks[1]
  w = smoke_run["workdir"]
  namespace = {
      "OVERRIDES": [f"--config.base={os.path.join(w, 'base')}", f"--config.workdir={tmp_path / 'custom'}",
                    f"--config.data.train={os.path.join(w, 'data', 'train.jsonl')}",
                    f"--config.data.validation={os.path.join(w, 'data', 'val.jsonl')}",
                    "--config.data.max_seq_len=256", "--config.data.batch_size=8", "--config.lora.rank=4",
                    "--config.optim.warmup_steps=1", "--config.train.dtype=float32",
                    "--config.train.frozen_dtype=float32", "--config.mesh.devices=1"],
      "STEPS": 3}
  exec(compile(blocks[1], "docs/custom_loop.md", "exec"), namespace)
  out = capsys.readouterr().out
  losses = [float(x) for x in re.findall(r"step \d: loss ([0-9.]+)", out)]
  assert len(losses) == 3 and all(np.isfinite(losses))
  assert re.search(r"validation loss [0-9.]+ over \d+ assistant tokens", out)
  assert dict(namespace["traces"]) == {"train_step": 1, "eval_step": 1}
  assert os.path.isdir(tmp_path / "custom" / "checkpoints" / "3")
  loaded = load_model(namespace["model_dir"])
  assert loaded.meta["trained_steps"] == 3 and loaded.lora_config.rank == 4
