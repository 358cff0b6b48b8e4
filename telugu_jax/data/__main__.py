"""Data pipeline CLI: `python -m telugu_jax.data STAGE --in PATH... --out DIR [options]`.

    python -m telugu_jax.data read      --in alpaca_data.json --out runs/data/read/alpaca [--format auto]
    python -m telugu_jax.data read      --in aya.parquet --out runs/data/read/aya --where language_code=tel
    python -m telugu_jax.data read      --in alpaca_te.csv --out runs/data/read/te --lang-columns te \
                                        [--fields instruction=telugu_instruction,output=telugu_output]
    python -m telugu_jax.data translate --in runs/data/read/alpaca/records.jsonl --out runs/data/tr/alpaca
    python -m telugu_jax.data synth     --out runs/data/synth
    python -m telugu_jax.data clean     --in runs/data/tr/alpaca/records.jsonl --out runs/data/clean
    python -m telugu_jax.data dedupe    --in runs/data/clean/records.jsonl --out runs/data/dedupe
    python -m telugu_jax.data mix       --in runs/data/dedupe/records.jsonl --out runs/data/mix
    python -m telugu_jax.data prepare   --config configs/data.py

Settings come from `--config` (default configs/data.py, the packaged one outside a checkout) with overrides
like `--config.clean.min_telugu_ratio=0.6` (telugu_jax.config.load_config); a key that does not exist is an
error. Each stage prints its summary table (in, out, dropped per reason) and writes it to DIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from telugu_jax.config import load_config
from telugu_jax.data.settings import PrepareSettings, SynthConfig, TranslateConfig
from telugu_jax.errors import UserError, run_cli

STAGES = ("read", "translate", "synth", "clean", "dedupe", "mix", "prepare")


def _column_options(args) -> dict:
  """The column-layout options of `read`, only those given, so the input hash of a plain read is unchanged."""
  out: dict[str, Any] = {}
  if args.fields:
    out["fields"] = args.fields
  if args.lang_columns != "auto":
    out["lang_columns"] = args.lang_columns
  if args.where:
    out["where"] = list(args.where)
  return out


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.data", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("stage", choices=STAGES)
  p.add_argument("--in", dest="inputs", nargs="+", default=[], help="input files (stage read: upstream data)")
  p.add_argument("--out", help="output directory")
  p.add_argument("--config", default="configs/data.py")
  p.add_argument("--format", default="auto",
                 help="read: alpaca|dolly|oasst|flan|chat|sharegpt|interactions|records|auto")
  p.add_argument("--fields", help="read: schema field = file column, e.g. instruction=telugu_instruction,output=te_out")
  p.add_argument("--lang-columns", default="auto", choices=("auto", "te", "en", "translit", "both"),
                 help="read: which language of side-by-side bilingual columns (auto: Telugu; both: Telugu plus "
                      "en->te and te->en translation tasks)")
  p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                 help="read: keep only rows with this value (repeatable; e.g. language_code=tel, script=Telu); the "
                      "rest are counted as filtered")
  p.add_argument("--source", help="read: source name (default: the file name)")
  p.add_argument("--split", help="read: split of a datasets directory or hub dataset")
  p.add_argument("--system", choices=("fold", "keep"), default="fold", help="read: system turns of chat data")
  p.add_argument("--all-paths", action="store_true", help="read oasst: every complete path, not the best one")
  p.add_argument("--lang", nargs="*", default=[], help="read oasst: keep only these message languages")
  p.add_argument("--force", action="store_true", help="rerun even if DIR/summary.json matches the inputs")
  p.add_argument("--quiet", action="store_true", help="no progress bar or table")
  args, rest = p.parse_known_args(argv)
  cfg = load_config(args.config, rest) if (args.stage != "read" or rest) else None
  progress = not args.quiet
  if args.stage not in ("prepare", "synth") and not args.inputs:
    p.error(f"{args.stage} needs --in PATH...")
  if args.stage != "prepare" and not args.out:
    p.error(f"{args.stage} needs --out DIR")
  try:
    if args.stage == "read":
      from telugu_jax.data.readers import run_read

      s = run_read(args.inputs, args.out, args.format, args.source, progress=progress, force=args.force,
                   split=args.split, system=args.system, all_paths=args.all_paths, langs=args.lang,
                   **_column_options(args))
    elif args.stage == "translate":
      from telugu_jax.data.translate import run_translate

      s = run_translate(args.inputs, args.out, TranslateConfig.from_dict(cfg.translate), progress=progress,
                        force=args.force)
    elif args.stage == "synth":
      from telugu_jax.data.synth import run_synth

      s = run_synth(args.out, SynthConfig.from_dict(cfg.synth), TranslateConfig.from_dict(cfg.translate),
                    progress=progress, force=args.force)
    elif args.stage == "clean":
      from telugu_jax.data.clean import CleanConfig, run_clean

      s = run_clean(args.inputs, args.out, CleanConfig.from_dict(cfg.clean), progress=progress, force=args.force)
    elif args.stage == "dedupe":
      from telugu_jax.data.dedupe import DedupeConfig, run_dedupe

      s = run_dedupe(args.inputs, args.out, DedupeConfig.from_dict(cfg.dedupe), progress=progress, force=args.force)
    elif args.stage == "mix":
      from telugu_jax.data.mix import MixConfig, run_mix

      s = run_mix(args.inputs, args.out, MixConfig.from_dict(cfg.mix), progress=progress, force=args.force)
    else:
      from telugu_jax.data.pipeline import prepare

      return prepare(PrepareSettings.from_config(cfg), progress=progress)
  except UserError:
    raise  # already one line; --debug shows where it came from
  except (ValueError, FileNotFoundError) as e:
    raise UserError(str(e)) from e
  if s.get("cached") and progress:
    from telugu_jax.data.stage import format_table

    print(format_table(s) + "\n  (unchanged inputs: reused; --force to rerun)", file=sys.stderr)
  if args.quiet:
    print(json.dumps({k: s[k] for k in ("stage", "in", "out", "rejected")}, ensure_ascii=False))
  return s


if __name__ == "__main__":
  sys.exit(run_cli(lambda argv: main(argv) and 0))
