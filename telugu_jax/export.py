"""Export a telugu-jax model directory for PyTorch users.

    python -m telugu_jax.export --checkpoint CKPT --to DST --format hf|peft [--merge | --base-only]
        [--with-base] [--dtype float32|bfloat16] [--max-shard-size 5GB] [--overwrite]

`hf`: a folder `LlamaForCausalLM.from_pretrained` loads (safetensors, config, tokenizer, chat template,
generation config). A directory with a LoRA adapter needs --merge (merge it in) or --base-only.
`peft`: adapter_config.json + adapter_model.safetensors for `PeftModel.from_pretrained(base, DST)`;
--with-base also writes the base as a Hugging Face folder in DST/base.
"""

from __future__ import annotations

import argparse
import re
import sys

from telugu_jax.errors import UserError, run_cli

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", text.upper())
  if not m:
    raise argparse.ArgumentTypeError(f"size {text!r}: expected e.g. 5GB, 500MB, 2GiB")
  return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="telugu-jax model directory")
  p.add_argument("--to", dest="dst", required=True, help="folder to write")
  p.add_argument("--format", required=True, choices=("hf", "peft"))
  merge = p.add_mutually_exclusive_group()
  merge.add_argument("--merge", action="store_true", help="hf: merge the LoRA adapter into the weights")
  merge.add_argument("--base-only", action="store_true", help="hf: export the base, leaving the adapter out")
  p.add_argument("--with-base", action="store_true", help="peft: also write the base as a HF folder in DST/base")
  p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="hf: weight dtype (default: stored)")
  p.add_argument("--max-shard-size", type=parse_size, default="5GB", help="hf: safetensors shard size")
  p.add_argument("--no-verify", dest="verify", action="store_false",
                 help="skip loading the exported tokenizer with transformers to check its ids")
  p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
  return p


def _main(argv: list[str]) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.format == "peft" and (args.merge or args.base_only or args.dtype):
    parser.error("--merge, --base-only and --dtype apply to --format hf")
  if args.format == "hf" and args.with_base:
    parser.error("--with-base applies to --format peft")
  from telugu_jax.convert.errors import ConversionError
  from telugu_jax.convert.export import export_hf, export_peft
  from telugu_jax.model.io import ModelDirError
  from telugu_jax.tokenizer import TokenizerError

  try:
    if args.format == "hf":
      export_hf(args.checkpoint, args.dst, merge=args.merge, base_only=args.base_only, dtype=args.dtype,
                max_shard_bytes=args.max_shard_size, overwrite=args.overwrite, verify=args.verify)
    else:
      export_peft(args.checkpoint, args.dst, with_base=args.with_base, overwrite=args.overwrite, verify=args.verify)
  except UserError:
    raise  # already one line; --debug shows where it came from
  except (ConversionError, TokenizerError, ModelDirError, FileExistsError) as e:
    raise UserError(str(e)) from e
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command line under telugu_jax.errors.run_cli: a user's mistake is one line and exit code 2."""
  return run_cli(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
