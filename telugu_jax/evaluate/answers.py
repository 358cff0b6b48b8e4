"""Answers of one model to many questions, generated in batches, with each answer's checks.

Prompts are rendered by the chat format (`...\\nassistant:`) and answered by `inference.answer_batch`: sorted
by length so a batch shares a prompt bucket, and generated `batch_size` at a time with the batch padded to
that size: one compiled program per bucket, reused by every system of the same architecture (a merged LoRA
model is a plain model). Generation
stops at `<eos>` or at the template's stop string (`\\nuser:`); the raw text, every generated token decoded,
keeps that stop string so the compliance check sees the invented turn.

A prompt that does not fit the context with `max_new_tokens` of room is not generated: its row says why
(`error`) and counts as non-compliant; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from telugu_jax.evaluate.metrics import ResponseChecks, check_response, repetition_rate
from telugu_jax.evaluate.questions import Question
from telugu_jax.generate import Generator, SamplingConfig
from telugu_jax.inference import answer_batch


def _row(q: Question, text: str, raw: str, finish_reason: str, new_tokens: int, checks: ResponseChecks,
         error: str | None = None) -> dict:
  return {"id": q.id, "category": q.category, "prompt": q.text, "reference": q.reference, "text": text,
          "raw_text": raw, "finish_reason": finish_reason, "new_tokens": new_tokens, "error": error,
          "checks": checks.to_dict()}


def generate_answers(loaded, questions: Sequence[Question], sampling: SamplingConfig, *, batch_size: int = 16,
                     progress: bool = False) -> list[dict]:
  """One row per question, in the questions' order (see `_row` for the fields)."""
  tok = loaded.tokenizer
  if tok is None:
    raise ValueError(f"{loaded.path} has no tokenizer: evaluation needs one to render the chat prompts")
  fmt = loaded.chat_format()
  gen = Generator.from_loaded(loaded)
  room = loaded.config.max_seq_len - sampling.max_new_tokens
  rows: dict[int, dict] = {}
  todo = []
  for i, q in enumerate(questions):
    ids = fmt.encode_prompt(q.prompt).tolist()
    if len(ids) > room:
      msg = (f"prompt of {len(ids)} tokens + max_new_tokens={sampling.max_new_tokens} exceeds the model's context "
             f"of {loaded.config.max_seq_len}")
      checks = ResponseChecks(non_empty=False, ended_with_eos=False, invented_turn=None, script=None,
                              expected_script=q.expected_script, repetition=repetition_rate(""))
      rows[i] = _row(q, "", "", "error", 0, checks, error=msg)
    else:
      todo.append((i, ids))
  done = 0

  def report(n: int) -> None:
    nonlocal done
    done += n
    if progress:
      print(f"  {done}/{len(todo)} answered", flush=True)

  outs = answer_batch(gen, [ids for _, ids in todo], sampling, stop_strings=fmt.template.stop_strings,
                      batch_size=batch_size, on_batch=report)
  for (i, _), out in zip(todo, outs, strict=True):
    q = questions[i]
    raw = tok.decode([t for t in out.ids if t != tok.eos_id])
    text = out.text.strip()
    checks = check_response(text, raw, out.finish_reason, expected_script=q.expected_script, template=fmt.template)
    rows[i] = _row(q, text, raw, out.finish_reason, len(out.ids), checks)
  return [rows[i] for i in range(len(questions))]
