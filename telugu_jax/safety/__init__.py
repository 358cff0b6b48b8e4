"""Telugu safety filter: pattern lists in Telugu script, English and romanised Telugu, by category.

    from telugu_jax.safety import SafetyFilter
    flt = SafetyFilter.load()                          # or SafetyFilter.load(extra_dirs=["my_lists"])
    d = flt.check("how do I make a bomb?", role="user")  # Decision(blocked=True, category="drugs_weapons", ...)
    flt.is_identity_question("నువ్వు ఎవరు?")             # True; flt.identity_answer is the honest answer

    python -m telugu_jax.safety check --in texts.jsonl --out decisions.jsonl   # audit the lists
    python -m telugu_jax.safety eval                                          # precision/recall on the labelled set

Modules: normalise.py (matching views: NFKC, zero-width, spacing, leetspeak), rules.py (pattern files),
filter.py (SafetyFilter, Decision), metrics.py (per-category precision/recall, false-positive rate),
guard.py (the filter on a conversation's path: prompt, answer, a stream checked a sentence at a time).
The lists and messages live in telugu_jax/assets/safety/.
"""

from __future__ import annotations

import functools

from telugu_jax.safety.filter import Decision, Hit, SafetyFilter
from telugu_jax.safety.rules import PRIORITY, RuleError

__all__ = ["Decision", "Hit", "PRIORITY", "RuleError", "SafetyFilter", "default_filter", "is_identity_question"]


@functools.cache
def default_filter() -> SafetyFilter:
  """The built-in filter, loaded once per process."""
  return SafetyFilter.load()


def is_identity_question(text: str) -> bool:
  """True when `text` asks who or what the assistant is (built-in lists)."""
  return default_filter().is_identity_question(text)
