"""Evaluation of the demo run: base vs SFT-LoRA (works right after `make demo`).

    python -m telugu_jax.evaluate --config configs/eval.py

Add systems by editing `c.systems` (e.g. "sft-full": "runs/full"); the first one named in `baseline`
is what the others are compared with.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "full"                      # "full" | "report" (only import ratings and re-render from OUTPUT)
  c.systems = {"base": "runs/demo/base", "sft": "runs/demo/sft"}   # name -> run folder or model dir
  c.baseline = "base"
  c.output = "runs/demo/eval"

  c.data = ml_collections.ConfigDict()
  c.data.heldout = "runs/demo/data/val.jsonl"   # held-out conversations: assistant-token perplexity, answers
  c.data.prose = "runs/demo/text/val.txt"       # held-out raw Telugu: forgetting ("" to skip)

  c.questions = ml_collections.ConfigDict()
  c.questions.path = "bundled"         # the 100-question set, or a Conversation JSONL of your own
  c.questions.limit = 0                # 0: all
  c.questions.per_category = 0         # 0: all

  c.heldout_answers = ml_collections.ConfigDict()
  c.heldout_answers.limit = 0          # answers to held-out prompts too: 0 all, N the first N, -1 none

  c.perplexity = ml_collections.ConfigDict()
  c.perplexity.max_seq_len = 512       # capped at each model's context
  c.perplexity.batch_size = 8

  c.generation = ml_collections.ConfigDict()
  c.generation.max_new_tokens = 128
  c.generation.temperature = 0.0       # greedy: reproducible answers, comparable systems
  c.generation.top_p = 1.0
  c.generation.repetition_penalty = 1.0
  c.generation.seed = 0
  c.generation.batch_size = 16

  c.rating = ml_collections.ConfigDict()
  c.rating.raters = ("rater1", "rater2")
  c.rating.seed = 0
  c.rating.sheets = ()                 # filled sheets (paths or globs) to import
  c.rating.key = ""                    # default OUTPUT/rating/key.csv

  # Public Telugu benchmarks, read as published (docs/evaluation_tasks.md). A task with an empty path is off; one
  # whose file is missing is skipped with one line. limit: first N items (0 all); k: few-shot examples.
  bench = "benchmarks/te"
  c.tasks = ml_collections.ConfigDict()
  c.tasks.bpb = dict(path="runs/demo/text/val.txt", limit=0, k=0, window=0, stride=0, separator="")
  c.tasks.translation = dict(en=f"{bench}/sib200_eng_Latn_test.tsv", te=f"{bench}/sib200_tel_Telu_test.tsv",
                             train_en=f"{bench}/sib200_eng_Latn_train.tsv",
                             train_te=f"{bench}/sib200_tel_Telu_train.tsv", limit=100, k=0, max_new_tokens=128)
  c.tasks.tydiqa = dict(path=f"{bench}/tydiqa_goldp_te_dev_qa.quist.json", train="", limit=0, k=0,
                        max_new_tokens=32)
  c.tasks.mgsm = dict(path=f"{bench}/mgsm_te.tsv", train="", limit=0, k=0, max_new_tokens=256)
  c.tasks.sib200 = dict(path=f"{bench}/sib200_tel_Telu_test.tsv", train=f"{bench}/sib200_tel_Telu_train.tsv",
                        limit=0, k=0)

  c.report = ml_collections.ConfigDict()
  c.report.samples = 12                # questions in the side-by-side table
  return c
