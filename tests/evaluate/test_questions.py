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


def _char_grams(text: str, n: int = 5) -> set[str]:
  s = "".join(text.split())
  return {s[i:i + n] for i in range(len(s) - n + 1)}


def _word_grams(text: str, n: int = 6) -> set[tuple[str, ...]]:
  w = text.split()
  return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def test_no_paraphrased_question_or_reference_in_demo_data():
  """The demo judges SFT on these questions as held out: no training conversation may ask one of them in other
  words (character 5-gram Jaccard of the first user turns: "which is our national animal" vs "which is India's
  national animal" scores 0.70; the same task on other content, e.g. synonyms of another word, up to 0.50, which
  is what SFT data should teach), and no bundled text (the pretraining prose too) may contain a run of 6 words of
  a reference answer. Closer paraphrases were removed by reading (assets/demo/README.md)."""
  convs = demo.bundled_conversations(extended=True)
  firsts = [(c.id, _char_grams(c.turns[0].content)) for c in convs]
  text = _word_grams("\n".join([t.content for c in convs for t in c.turns] + demo.bundled_prose(extended=True)))
  close, shared = [], []
  for q in load_questions():
    g = _char_grams(q.text)
    close += [(q.id, cid) for cid, h in firsts if len(g & h) / len(g | h) > 0.55]
    if q.reference and _word_grams(q.reference) & text:
      shared.append(q.id)
  assert not close and not shared, (close, shared)


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
