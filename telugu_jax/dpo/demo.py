"""Demo preference pairs made from the bundled conversations, and the demo DPO run.

    python -m telugu_jax.dpo demo --workdir runs/demo        (after `make demo`: needs runs/demo/sft)

No preference data ships with the project, so pairs are built by rule: `chosen` is the bundled reference
answer (written for the project), `rejected` a deliberately worse answer made from it, one rule per
conversation (picked by a stable hash of its id):
  truncated   the answer cut after about 40% of its words, mid-sentence (the model should not stop there);
  repeated    the answer's first sentence said four times over (degenerate repetition);
  off_topic   the answer of another conversation of a different category (fluent, but not an answer).
Answers too short to truncate (under 6 words) are repeated instead. Train/validation follow the demo's
own split (telugu_jax.demo.in_validation on the conversation id), so validation pairs come from
conversations the SFT model never trained on.
"""

from __future__ import annotations

import hashlib
import os
import re

from telugu_jax.data.records import Conversation
from telugu_jax.demo import bundled_conversations, in_validation
from telugu_jax.dpo.records import PreferencePair, make_pair, write_pairs

RULES = ("truncated", "repeated", "off_topic")
_SENTENCE_END = re.compile(r"(?<=[.!?।])\s+")


def _rule(conv_id: str) -> str:
  return RULES[int(hashlib.sha1(conv_id.encode("utf-8")).hexdigest()[:8], 16) % len(RULES)]


def truncate(answer: str, fraction: float = 0.4) -> str:
  words = answer.split()
  keep = max(2, int(len(words) * fraction))
  return " ".join(words[:keep]).rstrip(".,!?।;:")


def repeat_first_sentence(answer: str, times: int = 4) -> str:
  first = _SENTENCE_END.split(answer.strip())[0]
  return " ".join([first] * times)


def demo_pairs(conversations: list[Conversation]) -> list[PreferencePair]:
  """One pair per conversation: its last answer as chosen, a rule-made worse answer as rejected."""
  pairs = []
  n = len(conversations)
  for i, conv in enumerate(conversations):
    chosen = conv.turns[-1].content
    rule = _rule(conv.id)
    if rule == "truncated" and len(chosen.split()) < 6:
      rule = "repeated"
    if rule == "truncated":
      rejected = truncate(chosen)
    elif rule == "repeated":
      rejected = repeat_first_sentence(chosen)
    else:
      category = conv.meta.get("category")
      other = next(conversations[(i + k) % n] for k in range(1, n)
                   if conversations[(i + k) % n].meta.get("category") != category)
      rejected = other.turns[-1].content
    prompt = [(t.role, t.content) for t in conv.turns[:-1]]
    pairs.append(make_pair(f"{conv.id}/{rule}", "demo-pairs", prompt, chosen, rejected, "",
                           rejected_by=rule, category=conv.meta.get("category")))
  return pairs


def prepare_demo_pairs(out_dir: str, val_fraction: float = 0.1, extended: bool = False) -> dict[str, str]:
  """Write out_dir/{train,val}.jsonl; the split is the demo's (by conversation id). `extended`: from the demo's
  extended conversations too (telugu_jax.demo.EXTENDED_FILES; 2.7x the pairs, 80 held out instead of 21)."""
  convs = bundled_conversations(extended)
  pairs = demo_pairs(convs)
  train = [p for p, c in zip(pairs, convs, strict=True) if not in_validation(c.id, val_fraction)]
  val = [p for p, c in zip(pairs, convs, strict=True) if in_validation(c.id, val_fraction)]
  paths = {"train": os.path.join(out_dir, "train.jsonl"), "val": os.path.join(out_dir, "val.jsonl")}
  write_pairs(paths["train"], train)
  write_pairs(paths["val"], val)
  return paths
