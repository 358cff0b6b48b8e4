"""Convert a PyTorch checkpoint into a telugu-jax model directory.

    python -m telugu_jax.convert --from SRC --to DST [--format auto|hf|meta|state_dict|peft]
        [--key-map FILE] [--tokenizer PATH] [--dtype auto|float32|bfloat16]
        [--config FILE | --preset NAME] [--set FIELD=VALUE ...] [--base CKPT] [--overwrite]
        [--chat-user M --chat-assistant M --chat-sep S --chat-turn-sep S]

SRC is a Hugging Face folder, a Meta folder (params.json + consolidated.NN.pth), a state-dict file
(.pt/.pth/.bin/.safetensors, with --config or --preset, and --key-map for custom names), or a PEFT
adapter folder (with --base, the model directory it adapts; DST then holds our `lora` collection).

The chat template (--chat-*; default `user: …\nassistant: …`) is recorded in DST/model.json for fine-tuning
and chat. Conversion prints one line on the tokenizer: tokens per Telugu word, and whether it keeps the template
or which --chat-* options give one it keeps (`python -m telugu_jax.tokenizer inspect` says more).
"""

from __future__ import annotations

import argparse
import os
import sys

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
from telugu_jax.convert.layouts import LAYOUTS, parse_overrides
from telugu_jax.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--from", dest="src", required=True, help="checkpoint folder or file")
  p.add_argument("--to", dest="dst", required=True, help="model directory to write")
  p.add_argument("--format", default="auto", choices=("auto", *LAYOUTS), help="source layout (default: detect)")
  p.add_argument("--key-map", help="JSON file of checkpoint-name regex -> our parameter path")
  p.add_argument("--tokenizer", help="tokenizer.model / tokenizer.json or its folder (default: beside the weights)")
  p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                 help="stored parameter dtype (default: the checkpoint's)")
  p.add_argument("--compute-dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"),
                 help="activation dtype recorded in the config")
  p.add_argument("--config", dest="config_file", help="architecture: HF config.json, Meta params.json or ours")
  p.add_argument("--preset", help="architecture preset (tiny, smoke, demo, 300m) for a bare state dict")
  p.add_argument("--set", dest="overrides", action="append", metavar="FIELD=VALUE",
                 help="override a LlamaConfig field (repeatable), e.g. --set max_seq_len=4096")
  p.add_argument("--base", help="with a PEFT adapter: the telugu-jax model directory it adapts")
  p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
  for field, default in DEFAULT_TEMPLATE.to_dict().items():
    p.add_argument(f"--chat-{field.replace('_', '-')}", dest=f"chat_{field}", default=default,
                   help=f"chat template {field} recorded in model.json (default {default!r})")
  return p


def _main(argv: list[str]) -> int:
  args = build_parser().parse_args(argv)
  from telugu_jax.convert.errors import ConversionError
  from telugu_jax.convert.layouts import detect_layout
  from telugu_jax.model.io import ModelDirError
  from telugu_jax.tokenizer import TokenizerError

  try:
    layout = detect_layout(args.src) if args.format == "auto" else args.format
    if layout == "peft" and not os.path.isfile(os.path.join(args.src, "adapter_config.json")):
      try:
        found = f"it looks like a {detect_layout(args.src)} checkpoint"
      except ConversionError:
        found = "its layout is not one the converter knows"
      raise ConversionError(f"--format peft: {args.src} is not a PEFT adapter (no adapter_config.json); {found}: "
                            "drop --format peft (the layout is detected) or name the right one")
    if layout == "peft" or args.base:
      from telugu_jax.convert.peft_io import import_peft

      if layout != "peft":
        raise ConversionError(f"--base is for importing a PEFT adapter, but {args.src} is a {layout} checkpoint")
      if not args.base:
        raise ConversionError(f"{args.src} is a PEFT adapter: pass --base CKPT, the telugu-jax model directory "
                              "it adapts (convert the base model first)")
      import_peft(args.src, args.base, args.dst, overwrite=args.overwrite)
    else:
      from telugu_jax.convert.to_orbax import convert

      convert(args.src, args.dst, layout=layout, key_map=args.key_map, tokenizer=args.tokenizer, dtype=args.dtype,
              compute_dtype=args.compute_dtype, config_file=args.config_file, preset=args.preset,
              overrides=parse_overrides(args.overrides), overwrite=args.overwrite,
              chat_template=ChatTemplate.from_dict({f: getattr(args, f"chat_{f}") for f in DEFAULT_TEMPLATE.to_dict()}))
  except UserError:
    raise  # already one line; --debug shows where it came from
  except (ConversionError, TokenizerError, ModelDirError, FileExistsError) as e:
    raise UserError(str(e)) from e
  print(f"done: {args.dst}")
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command line under telugu_jax.errors.run_cli: a user's mistake is one line and exit code 2."""
  return run_cli(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
