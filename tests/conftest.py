"""Test set-up. XLA_FLAGS must be set before JAX is first imported (later it is silently ignored):
8 fake CPU devices for the sharding tests, and a persistent compilation cache so the suite pays each
compile once across runs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_cache = os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

# Telugu sentences written for these tests (everyday topics), plus the chat markers, so the tokenizers
# trained below know the characters the tests use.
TELUGU_SENTENCES = [
    "తెలుగు భాష చాలా మధురమైన భాష.",
    "నేను ఉదయం ఆరు గంటలకు నిద్ర లేస్తాను.",
    "మా ఊరిలో ఒక పెద్ద చెరువు ఉంది.",
    "వర్షాకాలంలో రైతులు వరి నాట్లు వేస్తారు.",
    "హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని.",
    "గోదావరి నది మహారాష్ట్రలో పుట్టి బంగాళాఖాతంలో కలుస్తుంది.",
    "పిల్లలు బడికి వెళ్ళే ముందు అల్పాహారం తినాలి.",
    "సంక్రాంతి పండుగకు ఇంటి ముందు ముగ్గులు వేస్తారు.",
    "ఆరోగ్యంగా ఉండాలంటే రోజూ నీళ్ళు ఎక్కువగా తాగాలి.",
    "మీ పేరు ఏమిటి? నా పేరు సీత.",
    "ఈ పుస్తకం ధర రెండు వందల రూపాయలు.",
    "కంప్యూటర్‌లో పని చేసేటప్పుడు మధ్యలో విరామం తీసుకోండి.",
    "సూర్యుడు తూర్పున ఉదయిస్తాడు, పడమర అస్తమిస్తాడు.",
    "అమ్మ వంటింట్లో పప్పు, అన్నం వండుతోంది.",
    "రేపు మా బడిలో ఆటల పోటీలు జరుగుతాయి.",
    "చెట్లు మనకు నీడను, పండ్లను, ప్రాణవాయువును ఇస్తాయి.",
    "నమస్కారం! మీకు ఎలా సహాయం చేయగలను?",
    "ఆ సినిమా నాకు బాగా నచ్చింది.",
    "మా తాతగారు ప్రతిరోజూ వార్తాపత్రిక చదువుతారు.",
    "2024 లో మేము తిరుపతి వెళ్ళాము.",
    "user: భారతదేశ రాజధాని ఏది?\nassistant: భారతదేశ రాజధాని న్యూఢిల్లీ.",
    "user: ఒక చిన్న కవిత రాయండి.\nassistant: వాన చినుకులు నేలను తాకాయి, పొలాలు పచ్చగా నవ్వాయి.",
]


@pytest.fixture(scope="session")
def sp_tokenizer():
  from telugu_jax.tokenizer import train_sentencepiece

  return train_sentencepiece(TELUGU_SENTENCES * 4, vocab_size=420)


# Some Latin text beside the Telugu, as a real corpus has: a default-settings tokenizer then knows the letters of
# the Latin chat markers (its character coverage of 0.9995 drops the rarest characters).
LATIN_SENTENCES = ["The quick brown fox jumps over the lazy dog.",
                   "Hello world, this is English text in a Telugu corpus."]


@pytest.fixture(scope="session")
def default_sp_tokenizer():
  """A sentencepiece model with the trainer's defaults (nmt_nfkc turns "\\n" into a space; no byte fallback)."""
  from telugu_jax.tokenizer import train_sentencepiece_defaults

  return train_sentencepiece_defaults((TELUGU_SENTENCES + LATIN_SENTENCES) * 4, vocab_size=420)


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory):
  """A byte-level BPE `tokenizer.json` trained here with the `tokenizers` library."""
  import json

  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(TELUGU_SENTENCES * 4, trainer)
  d = tmp_path_factory.mktemp("hf_tok")
  tok.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                        "pad_token": "<pad>"}))
  return d


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """The suite's one end-to-end training run (~0.25M params, under a minute): tokenizer, a pretrained
  `smoke` base and a LoRA SFT adapter on the bundled conversations, made by the demo's own code.
  Chat, evaluate, serve and export tests share it."""
  from telugu_jax import demo

  workdir = tmp_path_factory.mktemp("smoke")
  return demo.run(str(workdir), base_config="smoke_base", sft_config="smoke", vocab_size=512, evaluate=False,
                  samples=0)
