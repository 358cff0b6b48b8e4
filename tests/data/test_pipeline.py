"""`prepare` end to end on files written here: every stage's books balance, stages chain, a rerun is
all cached, and changing one source reruns only what depends on it. Plus the CLI's edges."""

import json
import os
import subprocess
import sys

import pytest

from telugu_jax.config import ConfigError, load_config
from telugu_jax.data.__main__ import main
from telugu_jax.data.pipeline import prepare
from telugu_jax.data.records import read_jsonl
from telugu_jax.data.settings import PrepareSettings

from .conftest import ALPACA, SHAREGPT, TELUGU_PAIRS, assert_books_balance, write_json, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "data.py")


def _config(tmp_path, alpaca_rows):
  alpaca = write_json(tmp_path / "alpaca.json", alpaca_rows)
  chat = write_jsonl(tmp_path / "sg.jsonl", SHAREGPT)
  cfg = load_config(CONFIG, [f"--config.workdir={tmp_path / 'work'}"])
  src = cfg.sources[0]
  cfg.sources = [src.__class__({"name": "alp", "paths": [str(alpaca)], "format": "alpaca", "translate": False,
                                "options": {}}),
                 src.__class__({"name": "sg", "paths": [str(chat)], "format": "auto", "translate": False,
                                "options": {}})]
  cfg.dedupe.prefer_sources = ["sg", "alp"]
  return cfg


def test_prepare_chain_books_and_caching(tmp_path):
  rows = ALPACA + [{"instruction": u, "input": "", "output": a} for u, a in TELUGU_PAIRS]
  rows.append(dict(rows[-1]))  # an exact duplicate
  cfg = _config(tmp_path, rows)
  logs = []
  s = prepare(PrepareSettings.from_config(cfg), progress=False, log=logs.append)
  work = tmp_path / "work"
  for name in ("read/alp", "read/sg", "clean", "dedupe", "mix"):
    assert_books_balance(work / name)
  assert s["clean"]["in"] == s["read/alp"]["out"] + s["read/sg"]["out"]
  assert s["dedupe"]["in"] == s["clean"]["out"] and s["mix"]["in"] == s["dedupe"]["out"]
  assert s["dedupe"]["rejected"] == {"duplicate_exact": 2}  # the appended copy, and ALPACA[0] == TELUGU_PAIRS[0]
  assert s["mix"]["out"] == sum(len(read_jsonl(work / "mix" / f"{sp}.jsonl")) for sp in ("train", "val", "test"))
  assert (work / "mix" / "data_card.md").exists()
  assert not any("cached" in line for line in logs)

  logs.clear()
  prepare(PrepareSettings.from_config(cfg), progress=False, log=logs.append)
  assert len(logs) == 5 and all("cached" in line for line in logs)

  # change one source: its read reruns, the other's does not; downstream reruns
  rows.append({"instruction": "పిల్లలకు ఒక మంచి అలవాటు చెప్పండి.", "input": "", "output": "రోజూ పుస్తకాలు చదవడం."})
  write_json(tmp_path / "alpaca.json", rows)
  logs.clear()
  s2 = prepare(PrepareSettings.from_config(cfg), progress=False, log=logs.append)
  status = {line.split()[1].rstrip(":"): "cached" if "cached" in line else "ran" for line in logs}
  assert status == {"read/alp": "ran", "read/sg": "cached", "clean": "ran", "dedupe": "ran", "mix": "ran"}
  assert s2["read/alp"]["in"] == s["read/alp"]["in"] + 1


def test_cli_stage_and_config_errors(tmp_path):
  src = write_jsonl(tmp_path / "recs.jsonl", [{"id": f"r{i}", "source": "te", "turns": [
      {"role": "user", "content": u}, {"role": "assistant", "content": a}]} for i, (u, a) in enumerate(TELUGU_PAIRS)])
  out = subprocess.run([sys.executable, "-m", "telugu_jax.data", "clean", "--in", str(src), "--out",
                        str(tmp_path / "c"), "--config", CONFIG, "--quiet"], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0, out.stderr
  assert json.loads(out.stdout.strip().splitlines()[-1]) == {"stage": "clean", "in": 6, "out": 6, "rejected": {}}
  with pytest.raises(ConfigError, match="no setting 'clean.min_telugu_ratoi'"):
    main(["clean", "--in", str(src), "--out", str(tmp_path / "d"), "--config", CONFIG,
          "--config.clean.min_telugu_ratoi=0.5"])
  s = main(["clean", "--in", str(src), "--out", str(tmp_path / "d"), "--config", CONFIG, "--quiet",
            "--config.clean.min_telugu_ratio=1.01"])
  assert s["out"] == 0 and s["rejected"] == {"low_telugu_ratio": 6}  # the override took effect
