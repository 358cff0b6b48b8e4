"""`prepare`: every stage from one config, each stage's output cached by the hash of its inputs.

    python -m telugu_jax.data prepare --config configs/data.py

    WORKDIR/read/<source>  ->  WORKDIR/translate/<source> (sources with translate=True)
    WORKDIR/synth          (when synth.enabled)
    WORKDIR/clean  ->  WORKDIR/dedupe  ->  WORKDIR/mix  (train/val/test.jsonl, data_card.md)

A stage's input hash covers its input files' bytes and its settings; when WORKDIR/<stage>/summary.json
holds the same hash, the stage is skipped. Downstream stages hash their upstream's *output*, so
changing one source reruns that source's read, then clean/dedupe/mix, and nothing else; and a
change that leaves an upstream output byte-identical stops there.
"""

from __future__ import annotations

import os
import sys

from telugu_jax.data.clean import run_clean
from telugu_jax.data.dedupe import run_dedupe
from telugu_jax.data.mix import run_mix
from telugu_jax.data.readers import run_read
from telugu_jax.data.settings import PrepareSettings
from telugu_jax.data.stage import RECORDS


def prepare(cfg: PrepareSettings, *, progress: bool = True, log=None) -> dict[str, dict]:
  """Run (or reuse) every stage; returns {stage dir name: summary}."""
  log = log or (lambda msg: print(msg, file=sys.stderr))
  work = cfg.workdir
  summaries: dict[str, dict] = {}

  def note(name: str, s: dict) -> None:
    summaries[name] = s
    log(f"[prepare] {name}: {'cached' if s.get('cached') else 'ran'} — in {s['in']:,}, out {s['out']:,}, "
        f"dropped {sum(s['rejected'].values()):,}")

  if not cfg.sources and not cfg.synth.enabled:
    raise ValueError("config has no sources and synth is disabled: nothing to prepare")
  names = [s.name for s in cfg.sources]
  if len(set(names)) != len(names):
    raise ValueError(f"source names must be unique, got {names}")
  outputs: list[str] = []
  for src in cfg.sources:
    d = os.path.join(work, "read", src.name)
    note(f"read/{src.name}", run_read(list(src.paths), d, src.format, src.name, progress=progress, **src.options))
    if src.translate:
      from telugu_jax.data.translate import run_translate

      t = os.path.join(work, "translate", src.name)
      cache = cfg.translate.cache or os.path.join(work, "translate_cache.sqlite")
      note(f"translate/{src.name}", run_translate([os.path.join(d, RECORDS)], t, cfg.translate, cache_path=cache,
                                                  progress=progress))
      d = t
    outputs.append(os.path.join(d, RECORDS))
  if cfg.synth.enabled:
    from telugu_jax.data.synth import run_synth

    d = os.path.join(work, "synth")
    cache = cfg.translate.cache or os.path.join(work, "translate_cache.sqlite")
    note("synth", run_synth(d, cfg.synth, cfg.translate, cache_path=cache, progress=progress))
    outputs.append(os.path.join(d, RECORDS))

  clean_dir, dedupe_dir, mix_dir = (os.path.join(work, s) for s in ("clean", "dedupe", "mix"))
  note("clean", run_clean(outputs, clean_dir, cfg.clean, progress=progress))
  note("dedupe", run_dedupe([os.path.join(clean_dir, RECORDS)], dedupe_dir, cfg.dedupe,
                            progress=progress))
  upstream = [os.path.join(work, k) for k in summaries if k != "mix"]
  note("mix", run_mix([os.path.join(dedupe_dir, RECORDS)], mix_dir, cfg.mix,
                      upstream=upstream, progress=progress))
  return summaries
