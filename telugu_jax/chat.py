"""Talk to a model: a multi-turn REPL, a one-shot answer, or a JSONL file of conversations answered in batches.

    python -m telugu_jax.chat --checkpoint runs/demo/sft                                  # REPL
    python -m telugu_jax.chat --checkpoint checkpoints/base --adapter runs/lora/model     # base + LoRA adapter
    python -m telugu_jax.chat --checkpoint runs/demo/sft --prompt "తెలుగు భాష గురించి చెప్పండి"
    python -m telugu_jax.chat --checkpoint runs/demo/sft --input in.jsonl --output out.jsonl --temperature 0

The REPL keeps the history in the chat format (`telugu_jax.chat_format`); when history plus the answer's
room (`max_new_tokens`) no longer fits the model's context, the oldest exchanges are dropped and the user
is told. Commands: `/reset`, `/save FILE` (the conversation as one JSONL record), `/exit`.

File mode reads `Conversation` records (`telugu_jax.data.records`). A conversation that ends with an
assistant turn is answered without it, and that turn is kept as `meta.reference`; every record comes out,
in input order, with the answer appended as an assistant turn and `meta.generation` = {finish_reason,
new_tokens, dropped_turns}, or, when it cannot be answered, unchanged with `meta.error`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from telugu_jax.chat_format import (
  ChatFormat,
  ChatFormatError,
  TooLongError,
  clean_answer,
  fit_prompt,
  neutralise_markers,
)
from telugu_jax.data.records import (
  Conversation,
  RecordError,
  Turn,
  iter_jsonl,
  read_jsonl,
  unicode_problem,
  write_jsonl,
)
from telugu_jax.errors import UserError, debug_requested
from telugu_jax.generate import Generator, SamplingConfig
from telugu_jax.inference import ChatError, answer_batch, load_chat  # noqa: F401 (load_chat: this CLI's API)
from telugu_jax.model.io import ModelDirError
from telugu_jax.safety import guard
from telugu_jax.tokenizer import TokenizerError

HELP = "type a message; /reset clears the history, /save FILE writes it, /exit quits"
# ---- conversations -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Reply:
  text: str
  finish_reason: str
  dropped_turns: int


class ChatSession:
  """A conversation with history, for the REPL and `--prompt`."""

  def __init__(self, generator: Generator, fmt: ChatFormat, sampling: SamplingConfig,
               stop_strings: Sequence[str] = (), safety=None):
    self.generator, self.fmt, self.sampling, self.safety = generator, fmt, sampling, safety
    self.stop_strings = tuple(fmt.template.stop_strings) + tuple(stop_strings)
    self.budget = generator.config.max_seq_len - sampling.max_new_tokens
    self.history: list[Turn] = []
    self.asked = 0

  def reset(self) -> None:
    self.history = []

  def ask(self, message: str, stream: Callable[[str], None] | None = None) -> Reply:
    """Answer `message`. With a safety filter (telugu_jax.safety, the CLI's default) the message is checked
    first (a refusal or the identity answer is returned without running the model) and the answer is
    streamed a sentence at a time, each sentence checked before it is shown (telugu_jax.safety.guard)."""
    user = Turn("user", neutralise_markers(message.strip(), self.fmt.template))
    if self.safety is not None and (verdict := guard.check_prompt(self.safety, message)) is not None:
      if stream is not None:
        stream(verdict.response)
      if verdict.finish_reason != "content_filter":  # the identity answer is a normal exchange
        self.history += [user, Turn("assistant", verdict.response)]
      return Reply(verdict.response, verdict.finish_reason, 0)
    ids, dropped = fit_prompt(self.fmt, self.history + [user], self.budget)
    self.history = self.history[dropped:]
    started = False
    checker = None if self.safety is None else guard.StreamGuard(self.safety)

    def on_text(_row: int, piece: str) -> None:
      nonlocal started
      if not started:  # the answer's first characters are the space after the marker
        piece = piece.lstrip()
        started = bool(piece)
      if checker is not None:
        piece = checker.feed(piece)
      if piece:
        stream(piece)

    sampling = dataclasses.replace(self.sampling, seed=self.sampling.seed + self.asked)
    self.asked += 1
    [gen] = self.generator.generate([ids], sampling, stop_strings=self.stop_strings,
                                    stream=None if stream is None else on_text)
    answer = clean_answer(gen.text, self.fmt.template)
    finish = gen.finish_reason
    if checker is not None and stream is not None:
      rest = checker.feed("", final=True)  # what the stream still held back
      if rest:
        stream(rest)
      verdict = checker.verdict
    else:
      verdict = None if self.safety is None else guard.check_answer(self.safety, answer)
    if verdict is not None:  # blocked: the refusal replaces (the rest of) the answer; nothing goes to history
      if stream is not None:
        stream(("\n" if checker is not None and checker.sent else "") + verdict.response)
      return Reply(verdict.response, verdict.finish_reason, dropped)
    if answer:
      self.history += [user, Turn("assistant", answer)]
    return Reply(answer, finish, dropped)

  def save(self, path: str) -> int:
    conv = Conversation(id=f"chat-{time.strftime('%Y%m%d-%H%M%S')}", turns=tuple(self.history), source="chat")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(conv.to_json() + "\n")
    return len(self.history)


def repl(session: ChatSession, read: Callable[[str], str], write: Callable[[str], None]) -> None:
  """The interactive loop. `read(prompt)` returns a line or raises EOFError (e.g. `input`)."""
  write(f"telugu-jax chat: {HELP}\n")
  while True:
    try:
      line = read("user> ")
    except (EOFError, KeyboardInterrupt):
      write("\n")
      return
    line = line.strip()
    if not line:
      continue
    if (why := unicode_problem(line)) is not None:
      write(f"(that message is not valid text: {why}; type it again)\n")
      continue
    if line.startswith("/"):
      cmd, _, arg = line.partition(" ")
      if cmd in ("/exit", "/quit"):
        return
      if cmd == "/reset":
        session.reset()
        write("(history cleared)\n")
      elif cmd == "/save" and arg.strip():
        try:
          n = session.save(arg.strip())
          write(f"(saved {n} turns to {arg.strip()})\n")
        except OSError as e:
          write(f"(could not save: {e})\n")
      else:
        write(f"(unknown command {line!r}: {HELP})\n")
      continue
    try:
      write("assistant> ")
      reply = session.ask(line, stream=write)
    except TooLongError as e:
      write(f"\n({e}: shorten it, or /reset)\n")
      continue
    write("\n")
    if reply.dropped_turns:
      write(f"(the history no longer fit the context of {session.generator.config.max_seq_len} tokens: "
            f"dropped the {reply.dropped_turns} oldest turns)\n")
    if not reply.text:
      write("(the model gave an empty answer; this exchange is not kept in the history)\n")


# ---- file mode -------------------------------------------------------------------------------------------

def answer_file(generator: Generator, fmt: ChatFormat, sampling: SamplingConfig, in_path: str, out_path: str, *,
                batch_size: int = 8, stop_strings: Sequence[str] = (), progress: bool = True) -> dict:
  """Answer every conversation of `in_path` into `out_path` (see module docstring). Returns counts."""
  from tqdm import tqdm

  convs: list[Conversation] = []

  def unreadable(e: RecordError, line: str) -> None:
    # A record that cannot be read (bad JSON, invalid Unicode) keeps its place in the output with the reason,
    # so one bad line never costs the other records their answers.
    # It is written back readable: invalid characters shown as U+FFFD, or an empty user turn when the line
    # is no conversation at all.
    try:
      conv = Conversation.from_dict(_repaired(json.loads(line)))
    except (ValueError, RecordError):
      conv = Conversation(id=e.where or "unreadable", turns=(Turn("user", ""),))
    convs.append(dataclasses.replace(conv, meta={**conv.meta, "error": f"{e.reason}: {e}"}))

  for conv in iter_jsonl(in_path, on_error=unreadable):
    convs.append(conv)
  stops = tuple(fmt.template.stop_strings) + tuple(stop_strings)
  budget = generator.config.max_seq_len - sampling.max_new_tokens
  out: list[Conversation | None] = [None] * len(convs)
  jobs = []  # (index, prompt ids, prompt turns, dropped, reference)
  for i, conv in enumerate(convs):
    if str(conv.meta.get("error", "")).startswith(("malformed", "invalid_unicode")):
      out[i] = conv
      continue
    turns, reference = list(conv.turns), None
    if turns and turns[-1].role == "assistant":
      turns, reference = turns[:-1], turns[-1].content
    try:
      fmt.check_turns(turns, for_prompt=True)
      ids, dropped = fit_prompt(fmt, turns, budget)
    except ChatFormatError as e:
      out[i] = dataclasses.replace(conv, meta={**conv.meta, "error": f"{e.reason}: {e}"})
      continue
    jobs.append((i, ids, turns, dropped, reference))
  bar = tqdm(total=len(jobs), desc="answering", unit="conv", disable=not progress, file=sys.stderr)
  gens = answer_batch(generator, [j[1] for j in jobs], sampling, stop_strings=stops, batch_size=batch_size,
                      on_batch=bar.update)
  for (i, _, turns, dropped, reference), gen in zip(jobs, gens, strict=True):
    conv = convs[i]
    meta = {**conv.meta, "generation": {"finish_reason": gen.finish_reason, "new_tokens": len(gen.ids),
                                        "dropped_turns": dropped}}
    if reference is not None:
      meta["reference"] = reference
    answer = clean_answer(gen.text, fmt.template)
    out[i] = dataclasses.replace(conv, turns=tuple(turns) + (Turn("assistant", answer),), meta=meta)
  bar.close()
  write_jsonl(out_path, out)
  return {"conversations": len(convs), "answered": len(jobs), "errors": len(convs) - len(jobs)}


def _repaired(value):
  """`value` with every string made encodable (lone surrogates and stray bytes become U+FFFD)."""
  if isinstance(value, str):
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
  if isinstance(value, dict):
    return {_repaired(k): _repaired(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_repaired(v) for v in value]
  return value


# ---- command line ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m telugu_jax.chat", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="model directory (full weights, or an adapter with its base)")
  p.add_argument("--adapter", help="LoRA adapter directory to apply on top of --checkpoint")
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--prompt", help="answer this one message and exit")
  mode.add_argument("--input", help="JSONL file of conversations to answer (needs --output)")
  p.add_argument("--output", help="where --input's answers go (JSONL)")
  p.add_argument("--batch-size", type=int, default=8, help="conversations per batch in --input mode")
  p.add_argument("--max-new-tokens", type=int, help="default: min(256, half the model's context)")
  p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
  p.add_argument("--top-k", type=int, default=0, help="0 = off")
  p.add_argument("--top-p", type=float, default=0.9, help="1 = off")
  p.add_argument("--repetition-penalty", type=float, default=1.1, help="1 = off")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--stop", action="append", default=[], help="extra stop string (repeatable); '\\nuser:' always")
  p.add_argument("--no-merge", action="store_true", help="apply the LoRA adapter on the fly instead of merging it")
  p.add_argument("--no-safety", action="store_true",
                 help="talk without the safety filter (on by default in the REPL and --prompt: messages and answers "
                      "are checked; --input file mode answers raw, for evaluation)")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if isinstance(sys.stdin, io.TextIOWrapper):
    # Bytes that are not UTF-8 reach the REPL as U+DC80..U+DCFF and are refused there, instead of ending the
    # session (and its conversation) with a UnicodeDecodeError.
    sys.stdin.reconfigure(errors="surrogateescape")
  if (args.input is None) != (args.output is None):
    parser.error("--input and --output go together")
  if args.batch_size < 1:
    parser.error("--batch-size must be >= 1")
  try:
    generator, fmt = load_chat(args.checkpoint, args.adapter, merge=not args.no_merge)
    context = generator.config.max_seq_len
    max_new = args.max_new_tokens or min(256, context // 2)
    if max_new >= context:
      raise ChatError(f"--max-new-tokens {max_new} leaves no room for a prompt in the context of {context} tokens")
    sampling = SamplingConfig(max_new_tokens=max_new, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]  # a shell passes "\n" literally
    if args.input:
      counts = answer_file(generator, fmt, sampling, args.input, args.output, batch_size=args.batch_size,
                           stop_strings=stops)
      print(json.dumps(counts), file=sys.stderr)
      if counts["conversations"] and not counts["answered"]:
        first = next(c.meta["error"] for c in read_jsonl(args.output) if "error" in c.meta)
        raise ChatError(f"no conversation of {args.input} could be answered (each reason is in meta.error of "
                        f"{args.output}); the first: {first}")
      if counts["errors"]:
        print(f"{counts['errors']} conversation(s) could not be answered: see meta.error in {args.output}",
              file=sys.stderr)
      return 0
    safety = None
    if not args.no_safety:
      from telugu_jax.safety import default_filter

      safety = default_filter()
    session = ChatSession(generator, fmt, sampling, stops, safety=safety)

    def write(s: str) -> None:
      sys.stdout.write(s)
      sys.stdout.flush()

    if args.prompt is not None:
      if (why := unicode_problem(args.prompt)) is not None:
        raise ChatError(f"--prompt is not valid text: {why}")
      session.ask(args.prompt, stream=write)
      write("\n")
      return 0
    repl(session, input, write)
    return 0
  except (UserError, ChatError, ModelDirError, TokenizerError, RecordError, TooLongError, ValueError, OSError) as e:
    if debug_requested(sys.argv):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("\n(interrupted)", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
