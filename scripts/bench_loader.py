"""Loader benchmark (suite `loader`): examples/s and tokens/s of the Grain pipeline, and packing efficiency.

    python scripts/benchmark.py --suite loader                                   # synthetic Alpaca-like lengths
    python scripts/benchmark.py --suite loader --data records.jsonl --tokenizer tok.model --no-packing

One row per (packing algorithm, bins): epochs through shard/shuffle/pack/batch (at least --min-examples
examples), timed after the data is encoded; efficiency = real tokens / slots, as the loader's stats report
it. With `--data`, a first row times the encoding of the records (chat format + tokenizer), which runs once
per process before training.
Synthetic lengths are drawn like Alpaca's: log-normal, many short examples and a long tail.
"""

from __future__ import annotations

import time

import numpy as np

from telugu_jax.data.loader import LoaderConfig, build_pipeline, sft_corpus
from telugu_jax.data.packing import CorpusBuilder, EncodedCorpus


def add_args(parser) -> None:
  parser.add_argument("--data", help="Conversation JSONL file(s), comma-separated (default: synthetic lengths)")
  parser.add_argument("--tokenizer", help="tokenizer.model / tokenizer.json for --data")
  parser.add_argument("--examples", type=int, default=20000, help="synthetic examples")
  parser.add_argument("--median-len", type=float, default=160.0, help="synthetic: median tokens per example")
  parser.add_argument("--sigma", type=float, default=0.8, help="synthetic: log-normal sigma (tail weight)")
  parser.add_argument("--max-seq-len", type=int, default=1024)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--bins", default="1,4,16,64", help="num_packing_bins values, comma-separated")
  parser.add_argument("--algorithms", default="first_fit,best_fit")
  parser.add_argument("--no-packing", action="store_true", help="also time the padded (unpacked) pipeline")
  parser.add_argument("--min-examples", type=int, default=20000,
                      help="repeat the data (reshuffled each epoch) until at least this many examples are timed, "
                           "so the last partial batch does not weigh on small data sets")


def synthetic_corpus(n: int, median: float, sigma: float, max_len: int, seed: int = 0) -> EncodedCorpus:
  """`n` examples of log-normal length (in [8, max_len + 1] tokens), random ids, loss on the last 60%."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(np.log(median), sigma, n).astype(int), 8, max_len + 1)
  builder = CorpusBuilder()
  for i, length in enumerate(lengths):
    mask = np.zeros(length, np.int8)
    mask[int(0.4 * length):] = 1
    builder.add(f"synthetic-{i}", rng.integers(4, 32000, length, dtype=np.int32), mask)
  return builder.build({"records": n}, [])


def time_epochs(corpus: EncodedCorpus, cfg: LoaderConfig, pad_id: int = 0) -> dict:
  ds = build_pipeline(corpus, shard=(0, 1), rows=cfg.batch_size, max_seq_len=cfg.max_seq_len, packing=cfg.packing,
                      packing_algorithm=cfg.packing_algorithm, num_packing_bins=cfg.num_packing_bins,
                      shuffle=cfg.shuffle, seed=cfg.seed, num_epochs=cfg.num_epochs,
                      pad_to_multiple=cfg.pad_to_multiple,
                      pad_id=pad_id)
  it = iter(ds)
  t0 = time.perf_counter()
  for _ in it:
    pass
  dt = time.perf_counter() - t0
  s = it.stats
  return {"packing": cfg.packing_algorithm if cfg.packing else "none",
          "bins": cfg.num_packing_bins if cfg.packing else "", "epochs": cfg.num_epochs, "batches": s.batches,
          "packing_efficiency": s.packing_efficiency, "examples_per_s": s.examples / dt,
          "tokens_per_s": s.tokens / dt, "batches_per_s": s.batches / dt, "seconds": dt}


def run(args) -> list[dict]:
  rows = []
  if args.data:
    from telugu_jax.chat_format import ChatFormat
    from telugu_jax.tokenizer import load_tokenizer

    if not args.tokenizer:
      raise SystemExit("--data needs --tokenizer")
    chat_format = ChatFormat(load_tokenizer(args.tokenizer))
    t0 = time.perf_counter()
    corpus = sft_corpus(args.data.split(","), chat_format, LoaderConfig(max_seq_len=args.max_seq_len))
    dt = time.perf_counter() - t0
    pad_id = chat_format.tokenizer.pad_id
    rows.append({"packing": "(encode records)", "examples": len(corpus),
                 "examples_per_s": corpus.summary["records"] / dt,
                 "tokens_per_s": corpus.summary["corpus_tokens"] / dt, "seconds": dt})
  else:
    corpus, pad_id = synthetic_corpus(args.examples, args.median_len, args.sigma, args.max_seq_len), 0
  lengths = corpus.lengths()
  print(f"{len(corpus)} examples; tokens per example: mean {lengths.mean():.0f}, "
        f"percentiles 10/50/90/99: {np.percentile(lengths, [10, 50, 90, 99]).round().tolist()}")
  epochs = -(-args.min_examples // len(corpus))
  base = LoaderConfig(max_seq_len=args.max_seq_len, batch_size=args.batch_size, num_epochs=epochs)
  for algorithm in args.algorithms.split(","):
    for bins in (int(b) for b in args.bins.split(",")):
      cfg = LoaderConfig(**{**base.__dict__, "packing_algorithm": algorithm, "num_packing_bins": bins})
      rows.append(time_epochs(corpus, cfg, pad_id))
  if args.no_packing:
    rows.append(time_epochs(corpus, LoaderConfig(**{**base.__dict__, "packing": False}), pad_id))
  return rows
