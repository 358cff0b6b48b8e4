"""Serve a model: `python -m telugu_jax.serve --checkpoint CKPT [--adapter NAME=DIR ...] [--port 8000]`.

    python -m telugu_jax.serve --checkpoint runs/demo/sft
    python -m telugu_jax.serve --checkpoint runs/demo/base --adapter sft=runs/demo/sft --api-key-env TJ_KEY
    python -m telugu_jax.serve --checkpoint runs/demo/sft --rate-sheet eval/blind_sheet.csv   # /rate

`--checkpoint` is served under its directory name (or `--name`); each `--adapter NAME=DIR` is that base
with the LoRA adapter in DIR, served as NAME; a request's `model` picks one. The base is held once: every
adapter is applied on the fly over the same weights (a batch holds one model's requests). Binds 127.0.0.1
unless `--host` says otherwise. With `--api-key-env NAME`, the key is read from that environment
variable and every route requires it. The safety filter (`telugu_jax.safety`) checks prompts and answers
unless `--no-safety` is given.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from telugu_jax.errors import UserError, debug_requested
from telugu_jax.inference import ChatError, load_base_and_adapters, load_chat
from telugu_jax.model.io import ModelDirError, resolve_model_dir
from telugu_jax.serve.engine import Engine, ServedModel
from telugu_jax.serve.ratings import RatingError, RatingStore
from telugu_jax.tokenizer import TokenizerError


def model_name(path: str) -> str:
  """A run folder's final model is `RUN/model`: name it after the run."""
  path = os.path.abspath(resolve_model_dir(path)).rstrip(os.sep)
  base = os.path.basename(path)
  return os.path.basename(os.path.dirname(path)) if base == "model" else base


def parse_adapters(specs: Sequence[str]) -> list[tuple[str, str]]:
  out = []
  for spec in specs:
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ChatError(f"--adapter {spec!r}: write it as NAME=DIR (the name requests use as their model)")
    out.append((name.strip(), path.strip()))
  return out


def load_models(checkpoint: str, adapters: Sequence[tuple[str, str]], name: str | None = None
                ) -> dict[str, ServedModel]:
  """Every served model by name: the checkpoint, then the base with each adapter. Without adapters the
  checkpoint is loaded as the chat CLI loads it (its own adapter merged); with adapters, the base is loaded
  once and every adapter is applied on the fly over those same arrays (one base in memory)."""
  names = [name or model_name(checkpoint), *(n for n, _ in adapters)]
  if dup := next((n for i, n in enumerate(names) if n in names[:i]), None):
    raise ChatError(f"two models are named {dup!r}: give each --adapter its own NAME (or use --name)")
  source = os.path.abspath(checkpoint)
  if not adapters:
    generator, fmt = load_chat(checkpoint)
    return {names[0]: ServedModel(names[0], generator, fmt, source)}
  dirs = [(n, resolve_model_dir(path)) for n, path in adapters]  # a training run folder names its model RUN/model
  own, fmt, generators = load_base_and_adapters(checkpoint, dirs)
  models = {names[0]: ServedModel(names[0], own, fmt, source)}
  for n, path in dirs:
    models[n] = ServedModel(n, generators[n], fmt, f"{source} + adapter {os.path.abspath(path)}")
  return models


def load_safety(enabled: bool):
  """The built-in safety filter (`telugu_jax.safety`), or None with `--no-safety`."""
  if not enabled:
    print("note: serving without the safety filter (--no-safety)", file=sys.stderr)
    return None
  from telugu_jax.safety import default_filter

  return default_filter()


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.serve", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="model directory (full weights, or an adapter with its base)")
  p.add_argument("--name", help="the name --checkpoint is served under (default: its directory name)")
  p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                 help="also serve --checkpoint with this LoRA adapter as model NAME (repeatable)")
  p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key every route needs")
  p.add_argument("--max-batch", type=int, default=16, help="requests decoded together at most")
  p.add_argument("--batch-window-ms", type=float, default=20.0,
                 help="how long the first waiting request waits for others to share its batch")
  p.add_argument("--max-tokens", type=int, default=512, help="cap on a request's max_tokens")
  p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
  p.add_argument("--rate-sheet", help="blind rating sheet (CSV from the evaluation kit) for the /rate page")
  p.add_argument("--ratings-db", help="SQLite file the scores go to (default: beside the sheet, .sqlite)")
  p.add_argument("--no-safety", action="store_true",
                 help="serve without the safety filter (on by default: prompts and answers are checked, streams go "
                      "out a sentence at a time)")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.max_batch < 1 or args.max_tokens < 1 or args.default_max_tokens < 1:
    parser.error("--max-batch, --max-tokens and --default-max-tokens must be >= 1")
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
  try:
    sock = bind(args.host, args.port)   # first: a port in use fails at once, before minutes of loading
    models = load_models(args.checkpoint, parse_adapters(args.adapter), args.name)
    ratings = None
    if args.rate_sheet:
      ratings = RatingStore(args.ratings_db or os.path.splitext(args.rate_sheet)[0] + ".sqlite", args.rate_sheet)
  except (UserError, ChatError, ModelDirError, TokenizerError, RatingError, ValueError, OSError) as e:
    if debug_requested(sys.argv):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  import uvicorn

  from telugu_jax.serve.app import create_app

  engine = Engine(models, max_batch=args.max_batch, batch_window_s=args.batch_window_ms / 1000)
  app = create_app(engine, api_key=api_key, max_tokens_cap=args.max_tokens,
                   default_max_tokens=min(args.default_max_tokens, args.max_tokens), ratings=ratings,
                   safety=load_safety(not args.no_safety))
  if args.host not in ("127.0.0.1", "localhost", "::1"):
    print(f"warning: binding {args.host}: other machines can reach this server"
          + ("" if api_key else " and no API key is set (--api-key-env)"), file=sys.stderr)
  print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/  (API: /v1/chat/completions)",
        file=sys.stderr)
  uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
  return 0


def bind(host: str, port: int) -> socket.socket:
  """The server's listening socket, bound now so that "serving on" is printed only once it is ours."""
  try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
  except OSError as e:
    raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server running there? "
                    "pick another --port") from None
  sock.set_inheritable(True)
  return sock


if __name__ == "__main__":
  sys.exit(main())
