"""`make demo` (or `python -m telugu_jax.demo`): the whole path on bundled data, on a CPU, in minutes.

With no base checkpoint at hand, it makes one: a sentencepiece tokenizer trained on the bundled
Telugu text, a ~5M-parameter `demo` LLaMA pretrained on it with the same trainer (configs/demo_base.py),
then SFT on the bundled conversations (configs/demo.py: full fine-tuning at this size, see FULL_WHY).
It then evaluates base vs SFT on held-out questions (configs/eval.py), prints the base's and the SFT
model's answers to three of them side by side, the table of the numbers the demo is judged by (format
compliance, Telugu script, chrF++, loops, held-out assistant perplexity), and leaves everything under
runs/demo/ for the next steps (chat, evaluate, export).
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


# The demo's data (assets/demo/README.md). EXTENDED is 2.7x more, written for the project too, but at the demo's CPU
# budget its recipe does not yet reach the demo's targets with it (docs/demo.md, runs N1-P240): with all files a
# 5M model trained within 10 minutes answers generally better (held-out perplexity 0.52-0.82x the base's) but stops
# less often (34-66% compliance, 21-55 loops in 100), so `make demo` reads the original set until a recipe does.
DEMO_FILES = {"conversations": ("conversations_a.jsonl", "conversations_b.jsonl"), "prose": ("prose.txt",)}
EXTENDED_FILES = {"conversations": ("conversations_c.jsonl", "conversations_d.jsonl"), "prose": ("prose_2.txt",)}


def _files(kind: str, extended: bool) -> list:
  return [assets() / name for name in DEMO_FILES[kind] + (EXTENDED_FILES[kind] if extended else ())]


def bundled_conversations(extended: bool = False) -> list[Conversation]:
  out = []
  for f in _files("conversations", extended):
    with importlib.resources.as_file(f) as path:
      out.extend(read_jsonl(path))
  return out


def bundled_prose(extended: bool = False) -> list[str]:
  """Paragraphs (blank-line separated) of the bundled prose."""
  text = "\n\n".join(f.read_text(encoding="utf-8") for f in _files("prose", extended))
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


def prepare_data(workdir: str, val_fraction: float = 0.1, extended: bool = False) -> dict[str, str]:
  """Write the SFT split and the pretraining text. Held-out conversations stay out of both trainings."""
  convs = bundled_conversations(extended)
  train = [c for c in convs if not in_validation(c.id, val_fraction)]
  val = [c for c in convs if in_validation(c.id, val_fraction)]
  paras = bundled_prose(extended)
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


SAMPLE_CATEGORIES = ("factual", "instruction", "translation")   # the before/after shown: fixed, not picked by score
FULL_WHY = ("full fine-tuning, not LoRA: at 5M parameters a rank-16 adapter does not learn the format within the "
            "demo's CPU budget (the 300M path keeps LoRA, configs/lora.py)")
HELDOUT_ANSWERS = 12   # held-out conversations whose answers the report shows (perplexity uses all of them)
LOOP = 0.5   # repetition (share of repeated 3-grams / 10-grams) from which an answer reads as a loop


def evaluate_demo(workdir: str, base: str, sft: str, paths: dict, per_category: int, heldout: int,
                  sft_name: str = "sft-lora", max_new_tokens: int = 128) -> dict:
  """The base-vs-SFT evaluation (telugu_jax.evaluate, configs/eval.py) on a few questions of each category
  and held-out prompts: perplexities, compliance, fidelity, chrF++, and the HTML report. Greedy decoding
  with no repetition penalty: what the numbers show is the model, not the decoder."""
  from telugu_jax.config import load_config
  from telugu_jax.evaluate.run import run as evaluate
  from telugu_jax.evaluate.settings import EvalSettings

  # Bits per byte beside the prose perplexity; the public benchmarks need their upstream files
  # (docs/evaluation_tasks.md), so the demo turns them off.
  off = [f"--config.tasks.{name}.path=" for name in ("tydiqa", "mgsm", "sib200")]
  ev = load_config("eval", [f"--config.output={os.path.join(workdir, 'eval')}",
                            f"--config.data.heldout={paths['val']}", f"--config.data.prose={paths['text_val']}",
                            f"--config.questions.per_category={per_category}",
                            f"--config.heldout_answers.limit={heldout}",
                            f"--config.generation.max_new_tokens={max_new_tokens}",
                            f"--config.tasks.bpb.path={paths['text_val']}", "--config.tasks.translation.en=",
                            "--config.tasks.translation.te=", *off])
  with ev.unlocked():
    ev.systems = {"base": base, sft_name: sft}   # a dict of names: replaced whole, not one key
  return evaluate(EvalSettings.from_config(ev))


def _answers(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "eval", "answers.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def print_samples(workdir: str, n: int, sft_name: str = "sft-lora") -> None:
  """The before/after: the first question of each of `n` fixed categories, the base's answer and the SFT
  model's side by side (from the evaluation's answers.jsonl)."""
  by_id: dict = {}
  for r in _answers(workdir):
    if r["set"] == "questions":
      by_id.setdefault(r["id"], {})[r["system"]] = r
  pairs = [p for p in by_id.values() if "base" in p and sft_name in p]
  order = list(SAMPLE_CATEGORIES) + sorted({p["base"]["category"] for p in pairs} - set(SAMPLE_CATEGORIES))
  shown = []
  for cat in order:
    shown += [p for p in pairs if p["base"]["category"] == cat][:1]
  def line(text: str) -> str:  # one line per answer: a looping model's newlines would flood the screen
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= 150 else text[:150] + " …"

  for pair in shown[:n]:
    base, sft = pair["base"], pair[sft_name]
    print(f"\n[{base['category']}] user: {line(base['prompt'])}")
    for name, r in (("base", base), ("SFT ", sft)):
      end = {"eos": "stopped at <eos>", "stop": "wrote a new turn", "length": "still going at the token limit"}
      print(f"  {name} ({end.get(r.get('finish_reason'), r.get('finish_reason'))}): {line(r['text'])}")
    if base.get("reference"):
      print(f"  reference: {line(base['reference'])}")


def demo_numbers(results: dict, workdir: str, sft_name: str) -> dict:
  """The numbers the demo is judged by, for base and SFT: on the evaluated (held-out) questions, format
  compliance, answers in Telugu script, chrF++, loops; assistant-token perplexity on held-out conversations."""
  rows = [r for r in _answers(workdir) if r["set"] == "questions"]
  out = {}
  for name in ("base", sft_name):
    q = results["systems"][name]["questions"]["overall"]
    reps = [r["checks"]["repetition"] for r in rows if r["system"] == name]
    out[name] = {"n": q["n"], "compliance": q["compliance"], "telugu": q["fidelity"], "chrf_pp": q.get("chrf_pp"),
                 "heldout_ppl": results["systems"][name]["perplexity"]["heldout"]["ppl"],
                 "loops": sum(x >= LOOP for x in reps), "max_repetition": max(reps, default=0.0)}
  return out


def print_numbers(numbers: dict, sft_name: str) -> None:
  b, s = numbers["base"], numbers[sft_name]
  ratio = s["heldout_ppl"] / b["heldout_ppl"]
  table = [("format compliance (stops at <eos>, no invented turn)", f"{b['compliance']:.0f}%",
            f"{s['compliance']:.0f}%", "SFT >= 80%, base <= 10%"),
           ("answers in Telugu script", f"{b['telugu']:.0f}%", f"{s['telugu']:.0f}%", ">= 95%"),
           ("chrF++ against the reference answers", f"{b['chrf_pp']:.1f}", f"{s['chrf_pp']:.1f}", "SFT > base"),
           ("answers that loop (repetition >= 0.5)", f"{b['loops']}/{b['n']}", f"{s['loops']}/{s['n']}", "SFT: none"),
           ("assistant-token perplexity, held-out conversations", f"{b['heldout_ppl']:.0f}",
            f"{s['heldout_ppl']:.0f} ({ratio:.2f}x)", "<= 0.6x base")]
  w = max(len(r[0]) for r in table)
  print(f"\n{'on ' + str(s['n']) + ' held-out questions (greedy)':<{w}}  {'base':>6}  {'SFT':>12}  target")
  for name, bv, sv, target in table:
    print(f"{name:<{w}}  {bv:>6}  {sv:>12}  {target}")


def run(workdir: str = "runs/demo", *, base_config: str = "demo_base", sft_config: str = "demo", vocab_size: int = 2048,
        base_args: list[str] | None = None, sft_args: list[str] | None = None, evaluate: bool = True,
        per_category: int = 0, samples: int = 3, sentencepiece_defaults: bool = False, extended: bool = False) -> dict:
  """The whole demo: configs `base_config` (pretraining) and `sft_config` (SFT), their paths moved under
  `workdir`, plus `base_args`/`sft_args` overrides (`--config.a.b=value`). `evaluate`: base vs SFT on the
  held-out questions, `per_category` of each category (0: all 100; one question in 12 was 8.3 points, so the
  demo's numbers are judged on all of them), else only perplexity (the test suite's smoke run); `samples`
  answers are printed. `extended`: also the extended data (EXTENDED_FILES).
  `sentencepiece_defaults`: the tokenizer is trained with sentencepiece's default settings
  (see `make_tokenizer`; its SFT then needs a template it keeps, e.g. `--config.chat.turn_sep= `)."""
  from telugu_jax.evaluate.perplexity import perplexity
  from telugu_jax.model.io import is_model_dir, load_model, resolve_model_dir
  from telugu_jax.train.loop import train_and_evaluate

  t0 = time.time()
  workdir = os.path.abspath(workdir)
  paths = prepare_data(workdir, extended=extended)
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
  sft_name = f"sft-{c.mode}"
  print(f"\n== {c.mode} SFT on {paths['train']} ==")
  if c.mode == "full":
    print(FULL_WHY)
  result = train_and_evaluate(c)
  print(f"sft: {result.model_dir}")

  numbers = None
  if evaluate:
    results = evaluate_demo(workdir, base_run, result.model_dir, paths, per_category, HELDOUT_ANSWERS,
                            sft_name=sft_name)
    base_ppl, sft_ppl = (results["systems"][n]["perplexity"]["heldout"] for n in ("base", sft_name))
    numbers = demo_numbers(results, workdir, sft_name)
    print("\n== before / after: the base continues the text, the SFT model answers and stops ==")
    print_samples(workdir, samples, sft_name)
    print_numbers(numbers, sft_name)
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
             "sft": result.model_dir, "base_ppl": base_ppl, "sft_ppl": sft_ppl, "numbers": numbers,
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
  p.add_argument("--extended", action="store_true",
                 help="also the extended data (2.7x the conversations: with the demo's 10 SFT epochs about 2.5x the "
                      "demo's time; no recipe reaches the demo's targets with it in 10 minutes yet, docs/demo.md)")
  p.add_argument("--mode", choices=("full", "lora"), default="",
                 help="override configs/demo.py's SFT mode (lora: an adapter, e.g. for --format peft export)")
  args = p.parse_args(argv)
  run(args.workdir, base_args=[f"--config.train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else None,
      sft_args=[f"--config.mode={args.mode}"] if args.mode else None, extended=args.extended)


if __name__ == "__main__":
  main()
