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
import importlib.util
import json
import os
import time

from telugu_jax.data.records import Conversation, read_jsonl, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def make_tokenizer(workdir: str, text_path: str, vocab_size: int):
  from telugu_jax.tokenizer import load_tokenizer, train_sentencepiece

  out = os.path.join(workdir, "tokenizer")
  if os.path.exists(os.path.join(out, "tokenizer.model")):
    return load_tokenizer(out)
  with open(text_path, encoding="utf-8") as f:
    lines = [line for line in f.read().split("\n") if line.strip()]
  # The chat markers are part of the text the model will see, so the tokenizer learns them too.
  lines += ["user: ప్రశ్న\nassistant: జవాబు"] * 20
  tok = train_sentencepiece(lines, vocab_size)
  tok.save(out)
  return tok


def load_config(name: str):
  """A configs/NAME.py get_config() from the repository (the demo runs from a checkout)."""
  path = os.path.join(REPO, "configs", f"{name}.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: run the demo from a checkout of the repository")
  spec = importlib.util.spec_from_file_location(f"telugu_jax_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def pretrain_config(workdir: str, paths: dict, tokenizer_dir: str, preset: str, steps: int, seq_len: int,
                    batch_size: int):
  c = load_config("pretrain")
  c.workdir = os.path.join(workdir, "base")
  c.base = ""
  c.tokenizer = tokenizer_dir
  c.model.preset = preset
  c.data.train = (paths["text_train"],)
  c.data.validation = (paths["text_val"],)
  c.data.max_seq_len = seq_len
  c.data.batch_size = batch_size
  c.data.num_packing_bins = 8
  c.optim.lr = 3e-3
  c.optim.warmup_steps = max(1, steps // 20)
  c.optim.weight_decay = 0.01
  c.train.max_steps = steps
  c.train.dtype = "float32"
  c.train.log_every = 10
  c.train.eval_every = steps
  c.train.save_every = steps
  c.mesh.devices = 1  # a tiny model: data parallelism over fake CPU devices only adds overhead
  return c


def evaluate_demo(workdir: str, base: str, sft: str, paths: dict, per_category: int, heldout: int) -> dict:
  """The base-vs-SFT evaluation (telugu_jax.evaluate, configs/eval.py) on a few questions of each category
  and held-out prompts: perplexities, compliance, fidelity, chrF++, and the HTML report."""
  from telugu_jax.evaluate.run import run as evaluate

  ev = load_config("eval")
  ev.systems = {"base": base, "sft-lora": sft}
  ev.output = os.path.join(workdir, "eval")
  ev.data.heldout, ev.data.prose = paths["val"], paths["text_val"]
  # bits per byte beside the prose perplexity; the benchmarks need their upstream files (docs/evaluation_tasks.md)
  ev.tasks.bpb.path = paths["text_val"]
  ev.tasks.translation.update(en="", te="")
  for name in ("tydiqa", "mgsm", "sib200"):
    ev.tasks[name].path = ""
  ev.questions.per_category = per_category
  ev.heldout_answers.limit = heldout
  ev.generation.max_new_tokens = 64
  return evaluate(ev)


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


def run(workdir: str = "runs/demo", *, preset: str = "demo", vocab_size: int = 2048, pretrain_steps: int = 160,
        pretrain_seq_len: int = 256, pretrain_batch: int = 16, sft_config: str = "demo", sft_overrides=None,
        report_questions: int = 2, samples: int = 4) -> dict:
  """The whole demo. `report_questions` questions per category go into the evaluation report (0: only
  perplexity, as the test suite's smoke run does); `samples` answers are printed."""
  from telugu_jax.evaluate.perplexity import perplexity
  from telugu_jax.model.io import is_model_dir, load_model, resolve_model_dir
  from telugu_jax.train.loop import train_and_evaluate

  t0 = time.time()
  workdir = os.path.abspath(workdir)
  paths = prepare_data(workdir)
  print(f"data: {paths['train']} and {paths['val']} (SFT), {paths['text_train']} (pretraining)")
  tok = make_tokenizer(workdir, paths["text_train"], vocab_size)
  print(f"tokenizer: {os.path.join(workdir, 'tokenizer')} ({tok.vocab_size} pieces)")

  base_run = os.path.join(workdir, "base")
  if not is_model_dir(resolve_model_dir(base_run)):
    print(f"\n== pretraining the {preset} base on bundled Telugu text ({pretrain_steps} steps) ==")
    train_and_evaluate(pretrain_config(workdir, paths, os.path.join(workdir, "tokenizer"), preset, pretrain_steps,
                                       pretrain_seq_len, pretrain_batch))
  print(f"base: {resolve_model_dir(base_run)}")

  c = load_config(sft_config)
  c.workdir = os.path.join(workdir, "sft")
  c.base = base_run
  c.data.train = (paths["train"],)
  c.data.validation = (paths["val"],)
  for k, v in (sft_overrides or {}).items():
    section, key = k.split(".")
    c[section][key] = v
  print(f"\n== LoRA SFT on {paths['train']} ==")
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
    base_ppl = perplexity(load_model(base_run), [paths["val"]], max_seq_len=seq).to_dict()
    sft_ppl = perplexity(load_model(result.model_dir), [paths["val"]], max_seq_len=seq).to_dict()
  print(f"assistant-token perplexity on {paths['val']} ({sft_ppl['tokens']} tokens): "
        f"base {base_ppl['ppl']:.2f} -> SFT {sft_ppl['ppl']:.2f}")
  summary = {"workdir": workdir, "tokenizer": os.path.join(workdir, "tokenizer"), "base": resolve_model_dir(base_run),
             "sft": result.model_dir, "base_ppl": base_ppl, "sft_ppl": sft_ppl,
             "seconds": round(time.time() - t0, 1)}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, ensure_ascii=False, indent=1)
  print(f"\ndone in {summary['seconds']:.0f}s. Next:\n"
        f"  python -m telugu_jax.chat --checkpoint {os.path.relpath(result.model_dir)}\n"
        f"  python -m telugu_jax.export --checkpoint {os.path.relpath(result.model_dir)} --to out/demo-hf --format hf")
  return summary


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--pretrain-steps", type=int, default=160)
  args = p.parse_args(argv)
  run(args.workdir, pretrain_steps=args.pretrain_steps)


if __name__ == "__main__":
  main()
