"""The bundled 100-question set: counts, references, scripts, and no overlap with the demo training data."""

from collections import Counter

from telugu_jax import demo
from telugu_jax.chat_format import ChatFormat
from telugu_jax.evaluate.metrics import main_script
from telugu_jax.evaluate.questions import CATEGORIES, load_questions


def test_bundled_questions(sp_tokenizer):
  qs = load_questions()
  assert len(qs) == 100 and len({q.id for q in qs}) == 100
  counts = Counter(q.category for q in qs)
  assert set(counts) == set(CATEGORIES) and min(counts.values()) >= 12
  fmt = ChatFormat(sp_tokenizer)
  for q in qs:
    fmt.check_turns(q.prompt, for_prompt=True)  # alternating turns, no forged markers, ends with the user
    assert main_script(q.text.split(":")[0]) == "te", q.id  # asked in Telugu
    if q.reference:
      assert main_script(q.reference) == q.expected_script, q.id
  for cat in ("factual", "translation", "summarisation"):
    assert all(q.reference for q in qs if q.category == cat), cat
  assert not any(q.reference for q in qs if q.category == "creative")
  assert sum(q.expected_script == "other" for q in qs) >= 3  # te -> en translations
  assert sum(len(q.prompt) > 1 for q in qs) >= 3              # multi-turn prompts


def test_no_question_in_demo_training_data():
  train = {t.content.strip() for c in demo.bundled_conversations() for t in c.turns}
  assert not [q.id for q in load_questions() if q.text.strip() in train]


def test_per_category_cut():
  qs = load_questions(per_category=2)
  assert Counter(q.category for q in qs) == {c: 2 for c in CATEGORIES}


def test_from_conversation_reference_and_expected_script():
  import pytest

  from telugu_jax.data.records import Conversation, Turn
  from telugu_jax.evaluate.questions import from_conversation

  te = from_conversation(Conversation.single("a", "రాజధాని ఏది?", "న్యూఢిల్లీ.", category="factual"))
  assert te.reference == "న్యూఢిల్లీ." and te.expected_script == "te" and te.category == "factual"
  en = from_conversation(Conversation.single("b", "ఆంగ్లంలోకి అనువదించండి: శుభోదయం.", "Good morning."))
  assert en.expected_script == "other" and en.category == "other"
  multi = Conversation("c", (Turn("user", "నమస్కారం"), Turn("assistant", "నమస్కారం!"), Turn("user", "ఎలా ఉన్నారు?")))
  q = from_conversation(multi)
  assert q.reference is None and len(q.prompt) == 3 and q.text == "ఎలా ఉన్నారు?"
  with pytest.raises(ValueError, match="needs a user turn"):
    from_conversation(Conversation("d", (Turn("assistant", "సరే"),)))
