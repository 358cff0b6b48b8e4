"""Issue 18 for the data stages: invalid Unicode is a rejected record, a stage publishes all or nothing, and an
unfinished or empty input is a one-line error (exit 2), never 0 records."""

import json
import os
import subprocess
import sys

import pytest

from telugu_jax.config import load_config
from telugu_jax.data.clean import run_clean
from telugu_jax.data.dedupe import run_dedupe
from telugu_jax.data.mix import run_mix
from telugu_jax.data.readers import run_read
from telugu_jax.data.records import Conversation, write_jsonl
from telugu_jax.data.settings import TranslateConfig
from telugu_jax.data.stage import Stage, StageInputError
from telugu_jax.data.translate import TranslateBackendError, run_translate

from .conftest import TELUGU_PAIRS, assert_books_balance

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _line(i, answer):
  return json.dumps({"id": f"r{i}", "source": "t", "turns": [{"role": "user", "content": TELUGU_PAIRS[i][0]},
                                                             {"role": "assistant", "content": answer}]},
                    ensure_ascii=False)


@pytest.fixture
def bad_text(tmp_path):
  """Records 1 and 3 are fine; record 2 holds a lone surrogate (valid JSON), record 4 a byte that is not UTF-8."""
  path = tmp_path / "bad.jsonl"
  lines = [_line(0, TELUGU_PAIRS[0][1]).encode(), _line(1, "aSURb").encode().replace(b"SUR", b"\\ud800"),
           _line(2, TELUGU_PAIRS[2][1]).encode(), _line(3, "x").encode().replace(b'"x"', b'"x\xff\xfey"')]
  path.write_bytes(b"\n".join(lines) + b"\n")
  return path


def _rejects(out_dir):
  return [json.loads(x) for x in (out_dir / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


def test_invalid_unicode_is_rejected_by_every_stage(tmp_path, bad_text):
  """Item 1: read, clean, dedupe and mix keep the good records and reject the two bad ones as invalid_unicode,
  naming file:line, with the raw text kept (escaped); before, they aborted on the whole file."""
  mix_cfg = load_config("data").mix
  from telugu_jax.data.mix import MixConfig

  runs = {"read": lambda o: run_read([str(bad_text)], o, progress=False),
          "clean": lambda o: run_clean([str(bad_text)], o, progress=False),
          "dedupe": lambda o: run_dedupe([str(bad_text)], o, progress=False),
          "mix": lambda o: run_mix([str(bad_text)], o, MixConfig.from_dict(mix_cfg), progress=False)}
  for name, run in runs.items():
    out = tmp_path / name
    s = run(str(out))
    books, rejected = assert_books_balance(out)
    assert s["in"] == 4 and s["rejected"].get("invalid_unicode") == 2, (name, s)
    bad = sorted((r for r in rejected if r["reason"] == "invalid_unicode"), key=lambda r: r["where"])
    assert [r["where"] for r in bad] == [f"{bad_text}:2", f"{bad_text}:4"], name
    assert "lone surrogate U+D800" in bad[0]["detail"] and "byte 0xff" in bad[1]["detail"], name
    raw = bad[0].get("raw")
    assert raw is not None and "ud800" in json.dumps(raw), name   # the raw row or line is kept (escaped)
  assert (tmp_path / "clean" / "records.jsonl").read_text(encoding="utf-8").count("\n") <= 2


def test_a_failed_stage_publishes_nothing(tmp_path):
  """Item 2: a stage that fails half-way leaves no records.jsonl for the next stage to take as complete."""
  write_jsonl(tmp_path / "in.jsonl", [Conversation.single(f"k{i}", u, a) for i, (u, a) in enumerate(TELUGU_PAIRS)])
  with pytest.raises(RuntimeError, match="killed"), Stage("clean", tmp_path / "out", input_hash="h") as stage:
    for n, conv in enumerate(stage.read([str(tmp_path / "in.jsonl")])):
      stage.count_in()
      stage.keep(conv)
      if n == 2:
        raise RuntimeError("killed")
  out = tmp_path / "out"
  assert not (out / "records.jsonl").exists() and not (out / "summary.json").exists()
  assert (out / "records.jsonl.part").read_text().count("\n") == 3   # kept for a resume, under its running name


def test_unfinished_or_empty_input_is_refused(tmp_path):
  """Item 2 and 5: a records.jsonl whose stage did not finish (3 of 7 records, no summary.json), an empty one,
  and an empty file given to `read` are one-line errors, not 0 records with exit 0."""
  src = tmp_path / "in.jsonl"
  write_jsonl(src, [Conversation.single(f"k{i}", u, a) for i, (u, a) in enumerate(TELUGU_PAIRS)])
  run_read([str(src)], str(tmp_path / "read"), progress=False)
  # as if the read had failed half-way with the old layout: records.jsonl cut short, no summary
  lines = (tmp_path / "read" / "records.jsonl").read_text().splitlines(keepends=True)
  (tmp_path / "read" / "records.jsonl").write_text("".join(lines[:3]))
  (tmp_path / "read" / "summary.json").unlink()
  with pytest.raises(StageInputError, match=r"the read stage that writes .* did not finish \(no summary.json\)"):
    run_clean([str(tmp_path / "read" / "records.jsonl")], str(tmp_path / "clean"), progress=False)
  assert not (tmp_path / "clean" / "records.jsonl").exists()

  (tmp_path / "empty.jsonl").write_text("\n")
  for run in (lambda: run_clean([str(tmp_path / "empty.jsonl")], str(tmp_path / "c2"), progress=False),
              lambda: run_read([str(tmp_path / "empty.jsonl")], str(tmp_path / "r2"), progress=False)):
    with pytest.raises(StageInputError, match="empty.jsonl: no records to .* \\(the input is empty\\)"):
      run()
  assert not (tmp_path / "c2" / "summary.json").exists() and not (tmp_path / "r2" / "records.jsonl").exists()

  # from the command line: one line, exit 2
  env = {**os.environ, "PYTHONPATH": REPO}
  cmd = ["clean", "--in", str(tmp_path / "read" / "records.jsonl"), "--out", str(tmp_path / "c3"), "--quiet"]
  p = subprocess.run([sys.executable, "-m", "telugu_jax.data", *cmd], cwd=REPO, env=env, capture_output=True, text=True)
  assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
  assert "did not finish" in p.stderr


class _Down:
  """A backend whose endpoint is down: every text fails."""
  name, model, style, split_sentences = "openai", "m", "llm", False

  def translate(self, texts, on_done):
    for j in range(len(texts)):
      on_done(j, ConnectionError("connection refused (127.0.0.1:9)"), {})


def test_translate_with_the_endpoint_down_is_an_error(tmp_path):
  """Item 5: every record failing is a one-line error naming the endpoint, not exit 0 with all rejected; nothing
  is published, and the rejects are retried by the next run."""
  write_jsonl(tmp_path / "in.jsonl", [Conversation.single("a", "Hello there.", "Hi.")])
  c = load_config("data", ["--config.translate.base_url=http://127.0.0.1:9/v1"]).translate
  c = TranslateConfig.from_dict(c)
  with pytest.raises(TranslateBackendError, match=r"all 1 record\(s\) failed.*127.0.0.1:9/v1.*running"):
    run_translate([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), c, backend=_Down(),
                  cache_path=str(tmp_path / "c.sqlite"), progress=False)
  assert not (tmp_path / "out" / "summary.json").exists() and not (tmp_path / "out" / "records.jsonl").exists()


def test_training_data_with_invalid_unicode_is_rejected(tmp_path, bad_text, sp_tokenizer):
  """Item 1 (training): the trainer's loader rejects the two bad records as invalid_unicode into the run's
  rejected.jsonl, with file:line, and trains on the rest (before: UnicodeDecodeError / a pybind11 cast error)."""
  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.data.loader import LoaderConfig, pretrain_dataset, sft_dataset

  rejected = tmp_path / "rejected.jsonl"
  ds = sft_dataset(str(bad_text), ChatFormat(sp_tokenizer), LoaderConfig(max_seq_len=256, batch_size=2),
                   process_index=0, process_count=1, rejected_path=rejected)
  assert next(iter(ds))["loss_mask"].sum() > 0
  rows = [json.loads(x) for x in rejected.read_text(encoding="utf-8").splitlines()]
  assert sorted((r["where"], r["reason"]) for r in rows) == [(f"{bad_text}:2", "invalid_unicode"),
                                                             (f"{bad_text}:4", "invalid_unicode")]
  text = tmp_path / "text.txt"
  text.write_bytes("తెలుగు వాక్యం.\n\n".encode() + b"bad \xff byte\n\n" + "మరో వాక్యం.\n".encode())
  pretrain_dataset(str(text), sp_tokenizer, LoaderConfig(max_seq_len=32, batch_size=2), process_index=0,
                   process_count=1, rejected_path=tmp_path / "rej_text.jsonl")
  rows = [json.loads(x) for x in (tmp_path / "rej_text.jsonl").read_text().splitlines()]
  assert [(r["where"], r["reason"]) for r in rows] == [(f"{text}:3", "invalid_unicode")]
