"""Benchmark-task harness timing (suite `tasks`): seconds per task on a model of a preset's shape with random
weights, split into model time (the forward passes: `Scorer` and `generate_answers`, with weights put on the
device and compiles) and harness time (everything else: reading the upstream file, tokenising, windows, prompts,
metrics).

    python scripts/benchmark.py --suite tasks --preset 300m --data benchmarks/te --tokenizer runs/demo/tokenizer

The harness share is what this measures: the model time of a real evaluation scales with the model and the
device, the harness time does not. Limits are small so a CPU run finishes; `--limit`, `--bpb-docs`, `--window`
and `--new-tokens` scale it up.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from telugu_jax.evaluate import tasks
from telugu_jax.evaluate.tasks import common
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.io import LoadedModel
from telugu_jax.model.llama import Llama
from telugu_jax.tokenizer import load_tokenizer


def add_args(parser) -> None:
  parser.add_argument("--preset", default="300m")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--tokenizer", default="runs/demo/tokenizer", help="a tokenizer directory")
  parser.add_argument("--data", default="benchmarks/te", help="folder with the upstream files (configs/eval.py names)")
  parser.add_argument("--bpb-text", default="", help="text for bits per byte (default DATA/tewiki_300_articles.txt)")
  parser.add_argument("--limit", type=int, default=4, help="items per generation/classification task")
  parser.add_argument("--bpb-docs", type=int, default=2)
  parser.add_argument("--window", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=16)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--tasks", default="bpb,translation,tydiqa,mgsm,sib200")
  parser.add_argument("--harness-only", action="store_true",
                      help="no forward passes: log-probabilities are 0 and answers empty, so the whole file (limit "
                           "and bpb-docs 0 = all) measures the harness alone")


class _Clock:
  """Wraps the model-side calls and adds up their wall time."""

  def __init__(self):
    self.seconds = 0.0

  def wrap(self, fn):
    def timed(*a, **kw):
      t0 = time.perf_counter()
      try:
        return fn(*a, **kw)
      finally:
        self.seconds += time.perf_counter() - t0
    return timed


def run(args) -> list[dict]:
  cfg = LlamaConfig.preset(args.preset, dtype=args.dtype)
  t0 = time.perf_counter()
  init = jax.jit(Llama(cfg).init_variables)
  if args.harness_only:  # shapes only: nothing is computed with the weights
    variables = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(init, jax.random.key(0)))
  else:
    variables = jax.tree_util.tree_map(np.asarray, init(jax.random.key(0)))
  init_s = time.perf_counter() - t0
  tok = load_tokenizer(args.tokenizer)
  loaded = LoadedModel(config=cfg, variables=variables, lora_config=None, tokenizer=tok, path=f"random {args.preset}",
                       meta={})
  d = args.data
  section = {
      "bpb": {"path": args.bpb_text or os.path.join(d, "tewiki_300_articles.txt"), "limit": args.bpb_docs,
              "window": args.window, "separator": "=+"},
      "translation": {"en": os.path.join(d, "sib200_eng_Latn_test.tsv"),
                      "te": os.path.join(d, "sib200_tel_Telu_test.tsv"), "limit": args.limit,
                      "max_new_tokens": args.new_tokens},
      "tydiqa": {"path": os.path.join(d, "tydiqa_goldp_te_dev_qa.quist.json"), "limit": args.limit,
                 "max_new_tokens": args.new_tokens},
      "mgsm": {"path": os.path.join(d, "mgsm_te.tsv"), "limit": args.limit, "max_new_tokens": args.new_tokens},
      "sib200": {"path": os.path.join(d, "sib200_tel_Telu_test.tsv"), "limit": args.limit},
  }
  wanted = args.tasks.split(",")
  settings, skipped = tasks.check_inputs(tasks.settings_from_config({k: section[k] for k in wanted}))
  for name, why in skipped.items():
    print(f"task {name} skipped: {why}")
  clock = _Clock()
  if args.harness_only:
    def no_scores(self, rows):
      return [np.zeros(len(r) - 1) for r in rows]

    def no_answers(loaded, prompts, *, max_new_tokens, batch_size=16):
      return [common.Answer(text="") for _ in prompts]

    common.Scorer.log_probs = no_scores
    for name in ("translation", "tydiqa", "mgsm"):
      tasks.TASKS[name].generate_answers = no_answers
  common.Scorer.__init__ = clock.wrap(common.Scorer.__init__)  # merging LoRA, weights to the device
  common.Scorer.log_probs = clock.wrap(common.Scorer.log_probs)
  for name in ("translation", "tydiqa", "mgsm"):
    mod = tasks.TASKS[name]
    mod.generate_answers = clock.wrap(mod.generate_answers)
  rows = []
  for name, s in settings.items():
    clock.seconds = 0.0
    t0 = time.perf_counter()
    metrics, _ = tasks.TASKS[name].run(loaded, s, batch_size=args.batch)
    total = time.perf_counter() - t0
    rows.append({"preset": args.preset, "params_M": round(cfg.num_params() / 1e6, 1), "task": name,
                 "items": metrics["n"], "total_s": round(total, 2), "model_s": round(clock.seconds, 2),
                 "harness_s": round(total - clock.seconds, 2),
                 "harness_ms_per_item": round(1000 * (total - clock.seconds) / max(metrics["n"], 1), 1),
                 "init_s": round(init_s, 1)})
    print(rows[-1], flush=True)
  return rows
