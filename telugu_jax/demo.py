"""`make demo` (or `python -m telugu_jax.demo`): the whole path on bundled data, on a CPU, in minutes.

With no base checkpoint at hand, it makes one: a sentencepiece tokenizer trained on the bundled
Telugu text, a ~5M-parameter `demo` LLaMA pretrained on it with the same trainer, then LoRA SFT on
the bundled conversations (configs/demo.py). It prints assistant-token perplexity of base vs SFT on
held-out conversations and a few answers, and leaves everything under runs/demo/ for the next steps
(chat, evaluate, export).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import os
import time

from telugu_jax.data.records import Conversation, read_jsonl, write_jsonl


def assets():
  return importlib.resources.files("telugu_jax") / "assets" / "demo"


def bundled_conversations() -> list[Conversation]:
  out = []
  for name in ("conversations_a.jsonl", "conversations_b.jsonl"):
    with importlib.resources.as_file(assets() / name) as path:
      out.extend(read_jsonl(path))
  return out


def bundled_prose() -> list[str]:
  """Paragraphs (blank-line separated) of the bundled prose."""
  text = (assets() / "prose.txt").read_text(encoding="utf-8")
  return [p.strip() for p in text.split("\n\n") if p.strip()]


def in_validation(key: str, fraction: float) -> bool:
  """Stable hash split: the same record lands on the same side on every machine and run."""
  h = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16)
  return h / 0xFFFFFFFF < fraction


def _group(texts: list[str], chars: int) -> list[str]:
  """Join consecutive texts (one per line) into documents of about `chars` characters."""
  docs, cur = [], []
  for t in texts:
    cur.append(t.replace("\n\n", "\n"))
    if sum(len(x) for x in cur) >= chars:
      docs.append("\n".join(cur))
      cur = []
  if cur:
    docs.append("\n".join(cur))
  return docs


def prepare_data(workdir: str, val_fraction: float = 0.1) -> dict[str, str]:
  """Write the SFT split and the pretraining text. Held-out conversations stay out of both trainings."""
  convs = bundled_conversations()
  train = [c for c in convs if not in_validation(c.id, val_fraction)]
  val = [c for c in convs if in_validation(c.id, val_fraction)]
  paras = bundled_prose()
  # Pretraining documents are ~1500-character runs of paragraphs, as in a real corpus where <eos> comes
  # at the end of long documents: a base that saw <eos> after every short paragraph or answer would
  # already "stop" after one, and SFT would have nothing to teach about ending an answer.
  docs = _group(paras, 1500)
  text_train = [d for i, d in enumerate(docs) if not in_validation(f"prose-{i}", val_fraction)]
  text_val = [d for i, d in enumerate(docs) if in_validation(f"prose-{i}", val_fraction)]
  # The base also reads the training conversations as plain text (no chat markers): it should know the
  # language of the answers, not the format, which is what SFT teaches.
  text_train += _group(["\n".join(t.content for t in c.turns) for c in train], 1500)
  paths = {"train": os.path.join(workdir, "data", "train.jsonl"), "val": os.path.join(workdir, "data", "val.jsonl"),
           "text_train": os.path.join(workdir, "text", "train.txt"),
           "text_val": os.path.join(workdir, "text", "val.txt")}
  write_jsonl(paths["train"], train)
  write_jsonl(paths["val"], val)
  for key, docs in (("text_train", text_train), ("text_val", text_val)):
    os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
    with open(paths[key], "w", encoding="utf-8") as f:
      f.write("\n\n".join(docs) + "\n")
  return paths


def make_tokenizer(workdir: str, text_path: str, vocab_size: int, *, sentencepiece_defaults: bool = False):
  """WORKDIR/tokenizer trained on the pretraining text: with the settings the chat format needs, or
  (`sentencepiece_defaults`) with sentencepiece's defaults, as a base from elsewhere may come (nmt_nfkc: no
  newlines; no byte fallback)."""
  from telugu_jax.tokenizer import load_tokenizer, train_sentencepiece, train_sentencepiece_defaults

  out = os.path.join(workdir, "tokenizer")
  if os.path.exists(os.path.join(out, "tokenizer.model")):
    return load_tokenizer(out)
  with open(text_path, encoding="utf-8") as f:
    lines = [line for line in f.read().split("\n") if line.strip()]
  # The chat markers are part of the text the model will see, so the tokenizer learns them too.
  lines += ["user: ప్రశ్న\nassistant: జవాబు"] * 20
  tok = (train_sentencepiece_defaults if sentencepiece_defaults else train_sentencepiece)(lines, vocab_size)
  tok.save(out)
  return tok


def _settings(name: str, overrides: list[str]):
  from telugu_jax.config import load_config
  from telugu_jax.train.settings import RunSettings

  return RunSettings.from_config(load_config(name, overrides))


def base_overrides(workdir: str, paths: dict) -> list[str]:
  """Where the demo's base run reads and writes, for configs/demo_base.py (or smoke_base.py)."""
  return [f"--config.workdir={os.path.join(workdir, 'base')}",
          f"--config.tokenizer={os.path.join(workdir, 'tokenizer')}",
          f"--config.data.train={paths['text_train']}", f"--config.data.validation={paths['text_val']}"]


def sft_overrides(workdir: str, paths: dict) -> list[str]:
  """Where the demo's SFT run reads and writes, for configs/demo.py (or smoke.py)."""
  return [f"--config.workdir={os.path.join(workdir, 'sft')}", f"--config.base={os.path.join(workdir, 'base')}",
          f"--config.data.train={paths['train']}", f"--config.data.validation={paths['val']}"]


def evaluate_demo(workdir: str, base: str, sft: str, paths: dict, per_category: int, heldout: int) -> dict:
  """The base-vs-SFT evaluation (telugu_jax.evaluate, configs/eval.py) on a few questions of each category
  and held-out prompts: perplexities, compliance, fidelity, chrF++, and the HTML report."""
  from telugu_jax.config import load_config
  from telugu_jax.evaluate.run import run as evaluate
  from telugu_jax.evaluate.settings import EvalSettings

  # Bits per byte beside the prose perplexity; the public benchmarks need their upstream files
  # (docs/evaluation_tasks.md), so the demo turns them off.
  off = [f"--config.tasks.{name}.path=" for name in ("tydiqa", "mgsm", "sib200")]
  ev = load_config("eval", [f"--config.output={os.path.join(workdir, 'eval')}",
                            f"--config.data.heldout={paths['val']}", f"--config.data.prose={paths['text_val']}",
                            f"--config.questions.per_category={per_category}",
                            f"--config.heldout_answers.limit={heldout}", "--config.generation.max_new_tokens=64",
                            f"--config.tasks.bpb.path={paths['text_val']}", "--config.tasks.translation.en=",
                            "--config.tasks.translation.te=", *off])
  with ev.unlocked():
    ev.systems = {"base": base, "sft-lora": sft}   # a dict of names: replaced whole, not one key
  return evaluate(EvalSettings.from_config(ev))


def print_samples(workdir: str, n: int) -> None:
  """A few answers of both systems side by side, from the evaluation's answers.jsonl."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "eval", "answers.jsonl"), encoding="utf-8")]
  by_id: dict = {}
  for r in rows:
    if r["set"] == "questions":
      by_id.setdefault(r["id"], {})[r["system"]] = r
  shown, seen = 0, set()
  for pair in by_id.values():
    base, sft = pair.get("base"), pair.get("sft-lora")
    if not base or not sft or base["category"] in seen or shown >= n:
      continue
    seen.add(base["category"])
    shown += 1
    def line(text: str) -> str:  # one line per answer: a looping model's newlines would flood the screen
      return text.replace("\n", " ⏎ ")[:160]

    print(f"\n[{base['category']}] user: {line(base['prompt'])}")
    print(f"  base ({base.get('finish_reason')}): {line(base['text'])}")
    print(f"  sft  ({sft.get('finish_reason')}): {line(sft['text'])}")
    if base.get("reference"):
      print(f"  reference: {line(base['reference'])}")


def run(workdir: str = "runs/demo", *, base_config: str = "demo_base", sft_config: str = "demo", vocab_size: int = 2048,
        base_args: list[str] | None = None, sft_args: list[str] | None = None, report_questions: int = 2,
        samples: int = 4, sentencepiece_defaults: bool = False) -> dict:
  """The whole demo: configs `base_config` (pretraining) and `sft_config` (SFT), their paths moved under
  `workdir`, plus `base_args`/`sft_args` overrides (`--config.a.b=value`). `report_questions` questions per
  category go into the evaluation report (0: only perplexity, as the test suite's smoke run does); `samples`
  answers are printed. `sentencepiece_defaults`: the tokenizer is trained with sentencepiece's default settings
  (see `make_tokenizer`; its SFT then needs a template it keeps, e.g. `--config.chat.turn_sep= `)."""
  from telugu_jax.evaluate.perplexity import perplexity
  from telugu_jax.model.io import is_model_dir, load_model, resolve_model_dir
  from telugu_jax.train.loop import train_and_evaluate

  t0 = time.time()
  workdir = os.path.abspath(workdir)
  paths = prepare_data(workdir)
  print(f"data: {paths['train']} and {paths['val']} (SFT), {paths['text_train']} (pretraining)")
  tok = make_tokenizer(workdir, paths["text_train"], vocab_size, sentencepiece_defaults=sentencepiece_defaults)
  print(f"tokenizer: {os.path.join(workdir, 'tokenizer')} ({tok.vocab_size} pieces)")

  base_run = os.path.join(workdir, "base")
  if not is_model_dir(resolve_model_dir(base_run)):
    base = _settings(base_config, base_overrides(workdir, paths) + list(base_args or ()))
    print(f"\n== pretraining the {base.model.preset} base on bundled Telugu text ({base.train.max_steps} steps) ==")
    train_and_evaluate(base)
  print(f"base: {resolve_model_dir(base_run)}")

  c = _settings(sft_config, sft_overrides(workdir, paths) + list(sft_args or ()))
  print(f"\n== {c.mode} SFT on {paths['train']} ==")
  result = train_and_evaluate(c)
  print(f"sft: {result.model_dir}")

  if report_questions:
    results = evaluate_demo(workdir, base_run, result.model_dir, paths, report_questions, report_questions * 2)
    base_ppl, sft_ppl = (results["systems"][n]["perplexity"]["heldout"] for n in ("base", "sft-lora"))
    comp = {n: results["systems"][n]["questions"]["overall"]["compliance"] for n in ("base", "sft-lora")}
    print_samples(workdir, samples)
    print(f"\nformat compliance on {results['sets']['questions']['n']} questions (answer ends with <eos>, no "
          f"invented turn): base {comp['base']:.0f}% -> SFT {comp['sft-lora']:.0f}%")
    print(f"report: {os.path.join(workdir, 'eval', 'report.html')}")
  else:
    seq = c.data.max_seq_len
    from telugu_jax.evaluate.run import use_writable_template

    sft, base = load_model(result.model_dir), load_model(base_run)
    use_writable_template(base, [sft.chat_template])
    base_ppl = perplexity(base, [paths["val"]], max_seq_len=seq).to_dict()
    sft_ppl = perplexity(sft, [paths["val"]], max_seq_len=seq).to_dict()
  print(f"assistant-token perplexity on {paths['val']} ({sft_ppl['tokens']} tokens): "
        f"base {base_ppl['ppl']:.2f} -> SFT {sft_ppl['ppl']:.2f}")
  summary = {"workdir": workdir, "tokenizer": os.path.join(workdir, "tokenizer"), "base": resolve_model_dir(base_run),
             "sft": result.model_dir, "base_ppl": base_ppl, "sft_ppl": sft_ppl,
             "seconds": round(time.time() - t0, 1)}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, ensure_ascii=False, indent=1)
  print(f"\ndone in {summary['seconds']:.0f}s. Next:\n"
        f"  python -m telugu_jax.chat --checkpoint {os.path.relpath(result.model_dir)}\n"
        f"  python -m telugu_jax.export --checkpoint {os.path.relpath(result.model_dir)} --to out/demo-hf --format hf"
        + (" --merge" if c.mode == "lora" else ""))
  return summary


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--pretrain-steps", type=int, default=0, help="override configs/demo_base.py's train.max_steps")
  args = p.parse_args(argv)
  run(args.workdir, base_args=[f"--config.train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else None)


if __name__ == "__main__":
  main()
