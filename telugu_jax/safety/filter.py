"""`SafetyFilter`: checks a user message or a model answer against the pattern lists and says what to do.

    flt = SafetyFilter.load()                       # built-in lists; SafetyFilter.load(extra_dirs=["my_lists"])
    d = flt.check(user_text, role="user")
    if d.response is not None:                      # a refusal (d.blocked) or the honest identity answer
      reply(d.response)
    else:
      answer = generate(...)
      d = flt.check(answer, role="assistant")
      reply(d.response if d.blocked else answer)

A keyword/pattern filter, the practical safety step for a small model: rules look for *requests and
statements* (how to kill a person, I want to die, where to buy ganja), not single sensitive words, so
that history of a war, a doctor's dosage advice or a crime report pass. It is a first line, not a
classifier: paraphrases its lists do not cover get through (see the held-out numbers in the report).

Every decision is logged on the `telugu_jax.safety` logger at INFO with the role, category and rule
that fired, never with the text (it may hold the personal data the filter is there to protect).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

from telugu_jax.safety import rules as rules_lib
from telugu_jax.safety.normalise import text_view, word_views

log = logging.getLogger("telugu_jax.safety")
MESSAGE_KEYS = ("refusals", "default_refusal", "identity")


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the filter decided about one text.

  blocked:  the text must not go to the model (user) or to the user (assistant).
  category: the category of the rule that fired ("violence", ...), "identity" for an identity question,
            None when nothing fired.
  rule:     "category/name" of that rule (the lists' files name it), or None.
  response: what to say instead: the refusal (self-harm: a supportive message) when blocked, the honest
            identity answer for an identity question (not blocked), else None.
  match:    the normalised span that matched, for auditing; not logged.
  """
  blocked: bool
  category: str | None = None
  rule: str | None = None
  response: str | None = None
  match: str | None = None


@dataclasses.dataclass(frozen=True)
class Hit:
  category: str
  rule: str
  match: str


def _read_messages(dirs: Sequence[str]) -> dict:
  msgs: dict = {"refusals": {}}
  for d in dirs:
    path = os.path.join(d, "messages.json")
    if not os.path.exists(path):
      continue
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except json.JSONDecodeError as e:
      raise rules_lib.RuleError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if bad := set(data) - set(MESSAGE_KEYS):
      raise rules_lib.RuleError(f"{path}: unknown key(s) {sorted(bad)}; allowed: {list(MESSAGE_KEYS)}")
    msgs["refusals"].update(data.get("refusals", {}))
    for k in ("default_refusal", "identity"):
      if k in data:
        msgs[k] = data[k]
  for k in ("default_refusal", "identity"):
    if not msgs.get(k):
      raise rules_lib.RuleError(f"no {k!r} message in messages.json of {list(dirs)}")
  return msgs


class SafetyFilter:
  """Pattern lists + messages. Build with `SafetyFilter.load()` or `SafetyFilter.off()`."""

  def __init__(self, rules: Sequence[rules_lib.Rule], identity_rules: Sequence[rules_lib.Rule],
               messages: dict, *, enabled: bool = True):
    self.rules = tuple(rules)
    self.identity_rules = tuple(identity_rules)
    self.messages = messages
    self.enabled = enabled

  @classmethod
  def load(cls, extra_dirs: Sequence[str | os.PathLike] = ()) -> SafetyFilter:
    """The built-in lists, extended by each directory of `extra_dirs` (same file format; see rules.py)."""
    dirs = (rules_lib.builtin_dir(), *(os.fspath(d) for d in extra_dirs))
    rules, identity = rules_lib.load_rules(dirs)
    return cls(rules, identity, _read_messages(dirs))

  @classmethod
  def off(cls) -> SafetyFilter:
    """A switched-off filter: blocks nothing, answers no identity question, still logs that it passed."""
    return cls((), (), {"refusals": {}, "default_refusal": "", "identity": ""}, enabled=False)

  @property
  def categories(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.category for r in self.rules))

  @property
  def identity_answer(self) -> str:
    return self.messages["identity"]

  def refusal(self, category: str) -> str:
    return self.messages["refusals"].get(category) or self.messages["default_refusal"]

  def matches(self, text: str, *, role: str = "user", first_only: bool = False) -> list[Hit]:
    """Every blocking rule that fires on `text` for `role`, in priority order."""
    if role not in rules_lib.ROLES:
      raise ValueError(f"role must be one of {rules_lib.ROLES}, got {role!r}")
    views = {"words": None, "text": None}
    hits = []
    for rule in self.rules:
      if role not in rule.roles:
        continue
      if views[rule.view] is None:
        views[rule.view] = word_views(text) if rule.view == "words" else [text_view(text)]
      if (m := rule.search(views[rule.view])) is not None:
        hits.append(Hit(rule.category, rule.name, m))
        if first_only:
          break
    return hits

  def identity_rule(self, text: str) -> str | None:
    """The identity rule that fires on `text`, or None."""
    views = word_views(text) if self.identity_rules else []
    for rule in self.identity_rules:
      if "user" in rule.roles and rule.search(views) is not None:
        return rule.name
    return None

  def is_identity_question(self, text: str) -> bool:
    """True for "who are you?", "నువ్వు మనిషివా?", "nuvvu evaru?" and the like."""
    return self.identity_rule(text) is not None

  def check(self, text: str, *, role: str = "user") -> Decision:
    """Decide about one user message (role="user") or model answer (role="assistant"); logs the decision."""
    if not isinstance(text, str):
      raise TypeError(f"check() takes the text as a str, got {type(text).__name__}")
    if not self.enabled:
      d = Decision(blocked=False)
    elif hits := self.matches(text, role=role, first_only=True):
      h = hits[0]
      d = Decision(True, h.category, h.rule, self.refusal(h.category), h.match)
    elif role == "user" and (rule := self.identity_rule(text)) is not None:
      d = Decision(False, rules_lib.IDENTITY, rule, self.identity_answer)
    else:
      d = Decision(blocked=False)
    log.info("safety %s: role=%s blocked=%s category=%s rule=%s chars=%d",
             "off" if not self.enabled else ("block" if d.blocked else "pass"), role, d.blocked, d.category,
             d.rule, len(text))
    return d
