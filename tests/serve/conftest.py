"""Fixtures for the server tests: a random tiny model saved as a model directory, and a uvicorn server
running the app in a thread of the test process on a free port (so tests can look into its engine)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

# Telugu prompts written for these tests.
PROMPTS = [
    "తెలుగు భాష గురించి చెప్పండి.",
    "మీ పేరు ఏమిటి?",
    "హైదరాబాదు ఏ రాష్ట్ర రాజధాని?",
    "వర్షాకాలంలో రైతులు ఏం చేస్తారు?",
    "ఒక చిన్న కవిత రాయండి.",
    "సంక్రాంతి పండుగ గురించి రెండు వాక్యాలు రాయండి.",
    "గోదావరి నది ఎక్కడ పుడుతుంది?",
    "ఆరోగ్యంగా ఉండాలంటే ఏం చేయాలి?",
    "పిల్లలు బడికి వెళ్ళే ముందు ఏం తినాలి?",
    "సూర్యుడు ఏ దిక్కున ఉదయిస్తాడు?",
    "ఈ పుస్తకం ధర ఎంత?",
    "మా ఊరిలో చెరువు ఉంది. దాని గురించి చెప్పండి.",
    "నమస్కారం! మీకు ఎలా సహాయం చేయగలను?",
    "ఆ సినిమా మీకు నచ్చిందా?",
    "చెట్లు మనకు ఏం ఇస్తాయి?",
    "రేపు మా బడిలో ఆటల పోటీలు జరుగుతాయి. మీరు వస్తారా?",
]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LiveServer:
  """`with LiveServer(app) as url:` runs uvicorn in a thread until the block ends."""

  def __init__(self, app):
    import uvicorn

    self.port = free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  def __enter__(self) -> str:
    self.thread.start()
    deadline = time.monotonic() + 30
    while not self.server.started:
      if time.monotonic() > deadline or not self.thread.is_alive():
        raise RuntimeError("the test server did not start")
      time.sleep(0.02)
    return self.url

  def __exit__(self, *exc):
    self.server.should_exit = True
    self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sp_tokenizer):
  """A random tiny model with the test tokenizer, context 512 (room for long answers in the cancel test)."""
  import jax

  from telugu_jax.model.config import LlamaConfig
  from telugu_jax.model.io import save_model
  from telugu_jax.model.llama import Llama

  config = LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size, max_seq_len=512)
  variables = jax.jit(Llama(config).init_variables)(jax.random.key(0))
  return save_model(tmp_path_factory.mktemp("serve") / "tiny", config, params=variables["params"],
                    tokenizer=sp_tokenizer)


@pytest.fixture(scope="session")
def tiny_models(tiny_model_dir):
  from telugu_jax.serve.__main__ import load_models

  return load_models(tiny_model_dir, [])
