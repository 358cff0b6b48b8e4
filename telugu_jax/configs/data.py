"""Data pipeline config: `python -m telugu_jax.data prepare --config configs/data.py [--config.a.b=value]`.

Sources are read, optionally translated, then (with the synthetic set, when enabled) cleaned, deduped
and mixed. Every stage writes WORKDIR/<stage>[/<source>]/{records,rejected}.jsonl and summary.json, and
a rerun redoes only the stages whose inputs or settings changed. Thresholds live here, not in code.
The default sources are the demo conversations bundled with the package, so `prepare` runs as is.
"""

import os

import ml_collections

_DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo")  # package data


def source(name: str, paths: list[str], format: str = "auto", translate: bool = False, **options):
  """One input: `options` go to the reader: split, system, all_paths, langs (OASST), and for Telugu sets as
  published: fields={"instruction": "telugu_instruction", ...} (schema field -> column), lang_columns=
  "auto"|"te"|"en"|"translit"|"both", where=["language_code=tel"] (rows kept; the rest counted as filtered)."""
  return ml_collections.ConfigDict({"name": name, "paths": list(paths), "format": format,
                                    "translate": translate, "options": dict(options)})


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.workdir = "runs/data"
  c.sources = [
      source("demo_a", [os.path.join(_DEMO, "conversations_a.jsonl")], "records"),
      source("demo_b", [os.path.join(_DEMO, "conversations_b.jsonl")], "records"),
      # Examples (paths are yours to fill in):
      # source("alpaca", ["data/alpaca_data.json"], "alpaca", translate=True),
      # source("dolly", ["data/databricks-dolly-15k.jsonl"], "dolly", translate=True),
      # source("oasst", ["data/oasst1_train.jsonl.gz"], "oasst", translate=True, langs=["en"]),
      # Telugu sets as published (README, "Preparing data", lists more):
      # source("te_alpaca", ["data/telugu_alpaca.csv"]),                        # bilingual columns: Telugu taken
      # source("aya_te", ["data/aya_dataset.parquet"], where=["language_code=tel"]),
      # source("indicalign", ["data/indicalign_te.parquet"], "interactions"),
      # source("custom", ["data/qa.csv"], fields={"instruction": "prashna", "output": "javabu"}),
  ]

  c.translate = ml_collections.ConfigDict()
  c.translate.backend = "openai"            # openai | indictrans2
  c.translate.base_url = "http://127.0.0.1:8000/v1"
  c.translate.model = "gpt-4o-mini"
  c.translate.api_key_env = "OPENAI_API_KEY"  # the key is read from this environment variable, never stored
  c.translate.concurrency = 8
  c.translate.max_retries = 6
  c.translate.timeout_s = 60.0
  c.translate.backoff_s = 1.0                # first retry delay; doubles each time, with jitter
  c.translate.src_lang = "eng_Latn"
  c.translate.tgt_lang = "tel_Telu"
  c.translate.cache = ""                     # SQLite file; default WORKDIR/translate_cache.sqlite
  c.translate.price_in_per_m = 0.15          # USD per million prompt tokens, for the cost estimate
  c.translate.price_out_per_m = 0.60
  c.translate.temperature = 0.0
  c.translate.chunk = 64                     # records per resumable chunk
  c.translate.indictrans_model = "ai4bharat/indictrans2-en-indic-dist-200M"
  c.translate.trust_remote_code = False      # IndicTrans2's hub checkpoints need it: set True only if you trust them
  c.translate.batch_size = 16
  c.translate.max_sentence_chars = 400
  c.translate.max_new_tokens = 256
  c.translate.device = "auto"                # auto | cpu | cuda

  c.synth = ml_collections.ConfigDict()
  c.synth.enabled = False
  c.synth.pairs_per_request = 5
  c.synth.requests_per_prompt = 1            # per (category, template)
  c.synth.max_requests = 200
  c.synth.max_tokens = 2_000_000
  c.synth.max_cost = 5.0                     # USD
  c.synth.temperature = 0.9

  c.clean = ml_collections.ConfigDict({
      "min_telugu_ratio": 0.75, "untranslated_ratio": 0.1, "untranslated_min_letters": 12, "max_latin_run": 6,
      "max_latin_word_frac": 0.2, "leakage_min_words": 8, "min_translation_ratio": 0.5, "min_user_chars": 2,
      "min_assistant_chars": 1, "max_turn_chars": 6000, "max_record_chars": 12000, "max_dup_line_frac": 0.3,
      "max_dup_ngram_frac": 0.35, "max_char_repeat": 10, "min_telugu_lang_score": -1.0, "lang_min_letters": 15,
      "allow_translation_tasks": True})

  c.dedupe = ml_collections.ConfigDict({"threshold": 0.8, "num_perm": 128, "shingle": 5, "near": True,
                                        "prefer_sources": ["demo_a", "demo_b", "synth"]})

  c.mix = ml_collections.ConfigDict()
  c.mix.weights = ml_collections.ConfigDict({"synth": 1.0})  # source -> fraction kept
  c.mix.default_weight = 1.0
  c.mix.total = 10_000                        # at most this many conversations (0: no limit)
  c.mix.type_caps = ml_collections.ConfigDict({"translation": 0.15, "other": 0.3})
  c.mix.split = (0.9, 0.05, 0.05)
  c.mix.salt = "telugu-jax"
  return c
