"""What a tokenizer does to Telugu text and to the chat template, before any training is spent on it.

    python -m telugu_jax.tokenizer inspect PATH [--text FILE ...] [--template-from MODEL_DIR] [--json]

PATH is a `tokenizer.model`, a `tokenizer.json` (or a folder holding one) or a model directory (its
tokenizer, checked against the chat template its model.json records). The report: type, vocab size,
normalisation rule, byte fallback, whether double spaces, newlines and ZWNJ survive encode/decode; on Telugu
text (the bundled prose unless --text is given) tokens per word, characters per token and the share of
byte-fallback and unknown tokens; whether the chat template round-trips (`chat_format.template_problem`)
and, when it does not, a template this tokenizer does round-trip, as the `--config.chat.*` overrides to use.

Many Telugu tokenizers are trained with sentencepiece's defaults: `nmt_nfkc` turns `\\n` and ZWNJ into
spaces and there is no byte fallback, so `user: …\\nassistant: …` cannot be written at all; a template whose
turn separator is a space (or whose markers are Telugu words) can.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate, template_problem
from telugu_jax.tokenizer import SentencePieceTokenizer, TokenizerError, load_tokenizer

# Markers and separators tried, in order, for a template the tokenizer keeps: the configured ones first,
# then Telugu markers ("question:", "answer:") for tokenizers that hardly know Latin letters, and a space
# between turns for tokenizers that turn newlines into spaces.
_MARKERS = (("ప్రశ్న:", "జవాబు:"), ("ప్రశ్న", "జవాబు"))
_TURN_SEPS = ("\n", " ")
_SURVIVES = {"whitespace": "రెండు  ఖాళీలు,  ముందు", "newline": "పంక్తి\nపంక్తి", "zwnj": "కంప్యూటర్\u200cలో"}


def suggest_template(tokenizer, template: ChatTemplate = DEFAULT_TEMPLATE) -> ChatTemplate | None:
  """The first template (the given one's markers first) that `tokenizer` round-trips; None if none does."""
  markers = ((template.user, template.assistant), *_MARKERS)
  seps = tuple(dict.fromkeys((template.turn_sep, *_TURN_SEPS)))
  for user, assistant in markers:
    for turn_sep in seps:
      candidate = ChatTemplate(user=user, assistant=assistant, sep=template.sep or " ", turn_sep=turn_sep)
      if template_problem(tokenizer, candidate) is None:
        return candidate
  return None


def _kind_and_rules(tok) -> dict:
  if isinstance(tok, SentencePieceTokenizer):
    import sentencepiece.sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(tok.sp.serialized_model_proto())
    n = proto.normalizer_spec
    return {"type": "sentencepiece", "model_type": model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type),
            "normalization": n.name or "custom", "add_dummy_prefix": n.add_dummy_prefix,
            "remove_extra_whitespaces": n.remove_extra_whitespaces, "byte_fallback": proto.trainer_spec.byte_fallback}
  spec = json.loads(tok.tok.to_str())
  norm = spec.get("normalizer") or {}
  pre = json.dumps(spec.get("pre_tokenizer") or {})
  model = spec.get("model") or {}
  byte_level = '"ByteLevel"' in pre
  return {"type": "tokenizer.json", "model_type": model.get("type"),
          "normalization": "identity" if not norm else norm.get("type", "custom"),
          "byte_fallback": bool(model.get("byte_fallback")) or byte_level, "byte_level": byte_level}


def _is_byte(tok, i: int) -> bool:
  if isinstance(tok, SentencePieceTokenizer):
    return tok.sp.is_byte(i)
  return bool(re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", tok.id_to_piece(i) or ""))


def _unk_id(tok) -> int | None:
  if isinstance(tok, SentencePieceTokenizer):
    return tok.sp.unk_id() if tok.sp.unk_id() >= 0 else None
  unk = json.loads(tok.tok.to_str()).get("model", {}).get("unk_token")
  return tok.tok.token_to_id(unk) if unk else None


def text_stats(tok, texts: Iterable[str]) -> dict:
  """Fertility on `texts`: tokens per (whitespace-separated) word, characters per token, the share of tokens that
  are byte-fallback pieces or unknown."""
  unk = _unk_id(tok)
  words = chars = tokens = bytes_ = unks = 0
  for text in texts:
    ids = tok.encode(text)
    words += len(text.split())
    chars += len(text)
    tokens += len(ids)
    bytes_ += sum(_is_byte(tok, i) for i in ids)
    unks += sum(i == unk for i in ids) if unk is not None else 0
  n = max(tokens, 1)
  return {"words": words, "chars": chars, "tokens": tokens, "tokens_per_word": round(tokens / max(words, 1), 3),
          "chars_per_token": round(chars / n, 3), "byte_fallback_rate": round(bytes_ / n, 4),
          "unk_rate": round(unks / n, 4)}


def read_texts(paths: Sequence[str], max_chars: int = 2_000_000) -> list[str]:
  """Non-empty lines of `paths` (the bundled prose when none), at most `max_chars` characters in all."""
  if not paths:
    from telugu_jax.demo import bundled_prose

    lines = [line for p in bundled_prose() for line in p.split("\n")]
  else:
    lines = []
    for p in paths:
      with open(p, encoding="utf-8") as f:
        lines += f.read().split("\n")
  out, total = [], 0
  for line in (x.strip() for x in lines):
    if line and total < max_chars:
      out.append(line)
      total += len(line)
  return out


def inspect(tok, texts: Sequence[str], template: ChatTemplate = DEFAULT_TEMPLATE) -> dict:
  """The report as a dict (keys as in the module docstring; `--json` prints it)."""
  report = {"path": getattr(tok, "path", None), "vocab_size": tok.vocab_size, **_kind_and_rules(tok)}
  for name, probe in _SURVIVES.items():
    report[f"keeps_{name}"] = tok.decode(tok.encode(probe)) == probe
  report.update(text_stats(tok, texts))
  problem = template_problem(tok, template)
  suggestion = suggest_template(tok, template) if problem else None
  report.update({"template": template.to_dict(), "template_ok": problem is None, "template_problem": problem,
                 "suggested_template": suggestion.to_dict() if suggestion else None,
                 "suggested_overrides": suggestion.overrides(relative_to=template) if suggestion else None})
  return report


def verdict(tok, template: ChatTemplate = DEFAULT_TEMPLATE, option_prefix: str = "--config.chat.") -> str:
  """One line: fertility on the bundled Telugu prose, and the template verdict (the override to use)."""
  stats = text_stats(tok, read_texts([]))
  line = (f"tokenizer: {stats['tokens_per_word']:.2f} tokens per Telugu word, {stats['chars_per_token']:.2f} "
          f"characters per token (bundled prose)")
  if (problem := template_problem(tok, template)) is None:
    return line + "; chat template ok"
  hint = suggest_template(tok, template)
  use = (hint.overrides(option_prefix, relative_to=template) if hint else
         "no template found: use a tokenizer with byte fallback")
  if hint and option_prefix.startswith("--chat-"):
    use = use.replace("turn_sep=", "turn-sep=")
  return f"{line}; {problem}; use {use}"


def format_report(r: dict) -> str:
  yes = {True: "yes", False: "NO"}
  rules = r["normalization"] + (f", dummy prefix {yes[r['add_dummy_prefix']]}, extra whitespace removed "
                                f"{yes[r['remove_extra_whitespaces']]}" if "add_dummy_prefix" in r else "")
  lines = [
      f"tokenizer      {r['path']} ({r['type']}, {r['model_type']}), {r['vocab_size']} tokens",
      f"normalisation  {rules}",
      f"byte fallback  {yes[r['byte_fallback']]}",
      f"survives       double spaces {yes[r['keeps_whitespace']]}, newlines {yes[r['keeps_newline']]}, "
      f"ZWNJ {yes[r['keeps_zwnj']]}",
      f"Telugu text    {r['words']} words, {r['chars']} characters: {r['tokens_per_word']:.2f} tokens/word, "
      f"{r['chars_per_token']:.2f} chars/token, byte fallback {100 * r['byte_fallback_rate']:.2f}% of tokens, "
      f"unknown {100 * r['unk_rate']:.2f}%",
  ]
  if r["template_ok"]:
    lines.append(f"chat template  ok: {r['template']}")
  else:
    lines.append(f"chat template  NOT ok: {r['template_problem']}")
    lines.append(f"               use {r['suggested_overrides']}" if r["suggested_overrides"] else
                 "               no template found that this tokenizer keeps: use one with byte fallback")
  return "\n".join(lines)


def _open(path: str):
  """(tokenizer, the template recorded with it): a model directory (or run folder) or a tokenizer."""
  from telugu_jax.model.io import META, read_meta, resolve_model_dir

  model_dir = resolve_model_dir(path)
  if os.path.isfile(os.path.join(model_dir, META)):
    meta = read_meta(model_dir)
    template = ChatTemplate.from_dict(meta.get("chat_template"))
    tok_dir = os.path.join(model_dir, "tokenizer")
    if not os.path.isdir(tok_dir) and meta.get("base_abs"):
      tok_dir = os.path.join(meta["base_abs"], "tokenizer")
    return load_tokenizer(tok_dir), template
  return load_tokenizer(path), DEFAULT_TEMPLATE


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.tokenizer", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  q = sub.add_parser("inspect", help="report what the tokenizer does to Telugu text and the chat template")
  q.add_argument("path", help="tokenizer.model / tokenizer.json / a folder with one / a model directory")
  q.add_argument("--text", action="append", default=[], help="Telugu text file (repeatable; default: bundled prose)")
  q.add_argument("--max-chars", type=int, default=2_000_000, help="read at most this many characters of text")
  for field in ("user", "assistant", "sep", "turn_sep"):
    q.add_argument(f"--chat-{field.replace('_', '-')}", dest=field, help=f"check this {field} instead")
  q.add_argument("--json", action="store_true", help="print one JSON object")
  args = p.parse_args(argv)
  try:
    tok, template = _open(args.path)
    given = {f: getattr(args, f) for f in ("user", "assistant", "sep", "turn_sep") if getattr(args, f) is not None}
    template = ChatTemplate(**{**template.to_dict(), **given})
    report = inspect(tok, read_texts(args.text, args.max_chars), template)
  except (TokenizerError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
  return 0

