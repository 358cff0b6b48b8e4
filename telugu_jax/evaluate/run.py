"""The evaluation pipeline: every system on the same data, then results.json, answers, rating sheets, report.

For each system (base, SFT-LoRA, SFT-full, ...):
  - perplexity on the assistant tokens of the held-out conversations, and on held-out raw Telugu prose
    (forgetting: what fine-tuning kept of the base's language modelling), same batches for every system;
  - answers to the 100-question set and to the held-out conversations' prompts (greedy by default), with
    chrF++, BLEU, ROUGE-L, format compliance, language fidelity and repetition, overall and per category.
Then the blind rating sheets for the question set are exported (once: re-running with the same answers keeps
the sheets raters may be filling), filled sheets given in `rating.sheets` are imported and aggregated, and
OUTPUT/{results.json, answers.jsonl, report.html} are written. `mode="report"` redoes only the last part
from a previous run's files (after raters send their sheets back).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import shutil
import time

from telugu_jax.evaluate import metrics, rating, report, tasks
from telugu_jax.evaluate.questions import from_conversation, load_questions
from telugu_jax.evaluate.settings import EvalSettings
from telugu_jax.evaluate.tasks.common import TaskDataError


class EvaluationError(ValueError):
  """A configuration or input the evaluation cannot use; the message says what to do."""


def read_curves(model_path: str) -> dict | None:
  """Train loss and validation loss by step from the run's metrics.jsonl (the run folder, or the model
  directory's parent)."""
  from telugu_jax.model.io import resolve_model_dir

  candidates = [os.path.join(model_path, "metrics.jsonl"),
                os.path.join(os.path.dirname(os.path.abspath(resolve_model_dir(model_path))), "metrics.jsonl")]
  path = next((p for p in candidates if os.path.isfile(p)), None)
  if path is None:
    return None
  train, val = [], []
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      rec = json.loads(line)
      if "loss" in rec:
        train.append([rec["step"], rec["loss"]])
      if "val_loss" in rec:
        val.append([rec["step"], rec["val_loss"]])
  return {"path": path, "train": train, "val": val}


def _system_kind(loaded) -> str:
  return "LoRA adapter" if "lora" in loaded.variables else "full weights"


def _check_paths(config) -> None:
  problems = []
  from telugu_jax.model.io import is_model_dir, resolve_model_dir

  if not config.systems:
    problems.append("config.systems is empty: name at least one model, e.g. {'base': 'runs/demo/base'}")
  for name, path in config.systems.items():
    if not is_model_dir(resolve_model_dir(path)):
      problems.append(f"system {name!r}: {path} is not a model directory or finished run")
  for what, path in (("data.heldout", config.data.heldout), ("data.prose", config.data.prose)):
    if path and not os.path.isfile(path):
      problems.append(f"{what}: {path} not found")
  if problems:
    raise EvaluationError("; ".join(problems) + ". Run `make demo` first, or point configs/eval.py at your runs.")


def use_writable_template(loaded, templates) -> None:
  """Each system is prompted with the chat template its model.json records. A base whose tokenizer cannot write
  its recorded template (a converted base keeps the default, which a sentencepiece-defaults tokenizer loses) is
  prompted with the first of the other systems' `templates` it can write, so base and SFT see the same prompts."""
  from telugu_jax.chat_format import template_problem

  if loaded.tokenizer is None or template_problem(loaded.tokenizer, loaded.chat_template) is None:
    return
  for t in templates:
    if template_problem(loaded.tokenizer, t) is None:
      loaded.meta = {**loaded.meta, "chat_template": t.to_dict()}
      return


def evaluate_systems(config) -> tuple[dict, list[dict]]:
  """Perplexities and answers of every system: (results without ratings, answer rows)."""
  from telugu_jax.chat_format import ChatTemplate
  from telugu_jax.data.records import read_jsonl
  from telugu_jax.evaluate.answers import generate_answers
  from telugu_jax.evaluate.perplexity import perplexity
  from telugu_jax.generate import SamplingConfig
  from telugu_jax.model.io import load_model, read_meta

  _check_paths(config)
  benchmarks = config.tasks
  templates = [ChatTemplate.from_dict(read_meta(p).get("chat_template")) for p in config.systems.values()]
  g = config.generation
  sampling = SamplingConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                            repetition_penalty=g.repetition_penalty, seed=g.seed)
  sets = {"questions": load_questions(config.questions.path, limit=config.questions.limit,
                                      per_category=config.questions.per_category)}
  if config.data.heldout and config.heldout_answers.limit >= 0:
    held = [from_conversation(c) for c in read_jsonl(config.data.heldout)]
    sets["heldout"] = held[:config.heldout_answers.limit] if config.heldout_answers.limit else held
  results: dict = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "config": config.config_dict(),
                   "baseline": config.baseline, "systems": {}, "training": {}, "warnings": [],
                   "sets": {name: {"n": len(qs), "categories": _counts(qs)} for name, qs in sets.items()}}
  benchmarks, results["skipped_tasks"] = tasks.check_inputs(benchmarks)
  for task, why in results["skipped_tasks"].items():
    if not why.startswith("off"):  # a task turned off (empty path) is silent; a missing file is one line
      print(f"task {task} skipped: {why}", flush=True)
  rows: list[dict] = []
  for name, path in config.systems.items():
    t0 = time.time()
    print(f"== {name}: {path}", flush=True)
    loaded = load_model(path)
    use_writable_template(loaded, templates)
    seq = min(config.perplexity.max_seq_len, loaded.config.max_seq_len)
    sys_res: dict = {"path": loaded.path, "kind": _system_kind(loaded), "perplexity": {}}
    for key, data_path, kind in (("heldout", config.data.heldout, "sft"), ("prose", config.data.prose, "text")):
      if data_path:
        sys_res["perplexity"][key] = perplexity(loaded, [data_path], kind=kind, max_seq_len=seq,
                                                batch_size=config.perplexity.batch_size).to_dict()
    for set_name, qs in sets.items():
      answers = generate_answers(loaded, qs, sampling, batch_size=g.batch_size)
      sys_res[set_name] = metrics.summarise_by_category(answers)
      rows.extend({"system": name, "set": set_name, **r} for r in answers)
    if benchmarks:
      try:
        sys_res["tasks"], task_rows = tasks.run_tasks(loaded, benchmarks, batch_size=g.batch_size)
      except TaskDataError as e:
        raise EvaluationError(str(e)) from None
      rows.extend({"system": name, **r} for r in task_rows)
      print("   " + tasks.summary_line(sys_res["tasks"]), flush=True)
    sys_res["seconds"] = round(time.time() - t0, 1)
    results["systems"][name] = sys_res
    results["training"][name] = read_curves(path)
    p = sys_res["perplexity"]
    q = sys_res["questions"]["overall"]
    print(f"   ppl heldout {p.get('heldout', {}).get('ppl', float('nan')):.2f}, prose "
          f"{p.get('prose', {}).get('ppl', float('nan')):.2f}; questions: compliance {q['compliance']:.1f}%, "
          f"fidelity {q['fidelity']:.1f}%, chrF++ {q.get('chrf_pp', float('nan')):.2f} ({sys_res['seconds']}s)",
          flush=True)
  for key in ("heldout", "prose"):
    counts = {n: s["perplexity"][key]["tokens"] for n, s in results["systems"].items() if key in s["perplexity"]}
    if len(set(counts.values())) > 1:
      results["warnings"].append(f"{key} perplexity counted different numbers of tokens per system {counts}: "
                                 "the systems use different tokenizers, so their perplexities do not compare")
  return results, rows


def _counts(qs) -> dict:
  out: dict = {}
  for q in qs:
    out[q.category] = out.get(q.category, 0) + 1
  return out


def export_rating_kit(config, rows: list[dict], out_dir: str) -> dict:
  """Blind sheets for the question set; kept as they are when the answers have not changed."""
  questions = {q.id: q for q in load_questions(config.questions.path, limit=config.questions.limit,
                                               per_category=config.questions.per_category)}
  answers: dict = {}
  for r in rows:
    if r["set"] == "questions":
      answers.setdefault(r["system"], {})[r["id"]] = r["text"]
  fingerprint = hashlib.sha1(json.dumps(answers, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
  stamp = os.path.join(out_dir, "answers.sha1")
  if os.path.isfile(stamp) and open(stamp).read().strip() == fingerprint:
    return {"sheets": sorted(glob.glob(os.path.join(out_dir, "sheets", "*.csv"))),
            "key": os.path.join(out_dir, "key.csv"), "reused": True}
  if os.path.isdir(out_dir):  # other answers than the sheets show: keep the old kit, never overwrite it
    backup = f"{out_dir}.{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    shutil.move(out_dir, backup)
    print(f"answers changed since the last rating sheets were exported: the old kit moved to {backup}")
  kit = rating.export_sheets(list(questions.values()), answers, out_dir, raters=tuple(config.rating.raters),
                             seed=config.rating.seed)
  with open(stamp, "w") as f:
    f.write(fingerprint + "\n")
  return {"sheets": sorted(kit["sheets"].values()), "key": kit["key"], "reused": False}


def import_ratings(config, out_dir: str) -> dict | None:
  sheets = [p for pattern in config.rating.sheets for p in sorted(glob.glob(pattern))]
  if config.rating.sheets and not sheets:
    raise EvaluationError(f"rating.sheets {list(config.rating.sheets)} match no file")
  if not sheets:
    return None
  key = config.rating.key or os.path.join(out_dir, "rating", "key.csv")
  if not os.path.isfile(key):
    raise EvaluationError(f"rating key {key} not found: give rating.key, the key.csv exported with the sheets")
  agg = rating.aggregate(rating.import_sheets(sheets, key))
  agg["sheets"] = sheets
  return agg


def write_outputs(results: dict, rows: list[dict], out_dir: str, samples: int) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  files = {"results": os.path.join(out_dir, "results.json"), "answers": os.path.join(out_dir, "answers.jsonl"),
           "report": os.path.join(out_dir, "report.html")}
  results["files"] = files
  with open(files["answers"], "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  with open(files["results"], "w", encoding="utf-8") as f:
    json.dump(results, f, ensure_ascii=False, indent=1)
  with open(files["report"], "w", encoding="utf-8") as f:
    f.write(report.render(results, rows, samples=samples))
  return files


def run(config: EvalSettings) -> dict:
  """The whole evaluation (mode "full"), or only rating import + report from OUTPUT's files ("report").
  `config`: `EvalSettings.from_config(load_config("configs/eval.py", overrides))`."""
  if not isinstance(config, EvalSettings):
    raise TypeError("evaluate.run takes EvalSettings: EvalSettings.from_config(load_config(path, overrides))")
  out_dir = config.output
  if config.mode == "report":
    path = os.path.join(out_dir, "results.json")
    if not os.path.isfile(path):
      raise EvaluationError(f"{path} not found: run the evaluation once with mode='full' first")
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
    with open(os.path.join(out_dir, "answers.jsonl"), encoding="utf-8") as f:
      rows = [json.loads(line) for line in f if line.strip()]
  elif config.mode == "full":
    results, rows = evaluate_systems(config)
    results["rating_kit"] = export_rating_kit(config, rows, os.path.join(out_dir, "rating"))
  else:
    raise EvaluationError(f"mode must be 'full' or 'report', got {config.mode!r}")
  results["ratings"] = import_ratings(config, out_dir)
  write_outputs(results, rows, out_dir, config.report.samples)
  return results
