"""`serve --adapter a=X --adapter b=Y ...` holds one base: every adapter's generator applies its adapter on the
fly over the very same base arrays, and answers as a generator loaded with that adapter alone does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from telugu_jax.generate import SamplingConfig
from telugu_jax.inference import load_chat
from telugu_jax.serve.engine import Engine, Job

from .conftest import PROMPTS
from .test_engine import Collect

ADAPTERS = [("a", 2, ("q_proj", "v_proj")), ("b", 2, ("q_proj", "v_proj")), ("c", 4, ("gate_proj", "down_proj"))]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir, tmp_path_factory):
  """Three adapters with random A and B (B = 0 would make every adapter equal to the base)."""
  from telugu_jax.model.config import LlamaConfig
  from telugu_jax.model.io import read_meta, save_model
  from telugu_jax.model.llama import Llama
  from telugu_jax.model.lora import LoraConfig

  config = LlamaConfig.from_dict(read_meta(tiny_model_dir)["model"])
  out = []
  for i, (name, rank, targets) in enumerate(ADAPTERS):
    lora_config = LoraConfig(rank=rank, alpha=2.0 * rank, targets=targets)
    shapes = jax.eval_shape(Llama(config, lora=lora_config).init_variables, jax.random.key(0))["lora"]
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(i)
    lora = jax.tree_util.tree_unflatten(tree, [rng.normal(0, 0.3, x.shape).astype(np.float32) for x in leaves])
    path = save_model(tmp_path_factory.mktemp("adapters") / name, config, lora=lora, lora_config=lora_config,
                      base=tiny_model_dir)
    out.append((name, path))
  return out


def test_adapters_share_one_base_and_answer_as_each_alone(tiny_model_dir, adapter_dirs):
  from telugu_jax.serve.__main__ import load_models

  models = load_models(tiny_model_dir, adapter_dirs, name="base")
  assert list(models) == ["base", "a", "b", "c"]
  base_leaves = jax.tree_util.tree_leaves(models["base"].generator.variables["params"])
  for name, _ in adapter_dirs:
    leaves = jax.tree_util.tree_leaves(models[name].generator.variables["params"])
    assert all(x is y for x, y in zip(leaves, base_leaves, strict=True)), f"{name} holds its own copy of the base"
    assert "lora" in models[name].generator.variables
  assert "lora" not in models["base"].generator.variables

  fmt = models["base"].fmt
  ids = fmt.encode_prompt([{"role": "user", "content": PROMPTS[0]}]).tolist()
  engine = Engine(models, batch_window_s=0.05).start()
  try:
    sinks = {}
    for name in models:  # queued together; a batch holds one model's jobs
      sinks[name] = Collect()
      engine.submit(Job(name, ids, 12, sinks[name], temperature=0))
    texts = {}
    for name, sink in sinks.items():
      assert sink.done.wait(120) and sink.error is None
      texts[name] = sink.result.text
  finally:
    engine.stop()
  sampling = SamplingConfig(max_new_tokens=16, temperature=0)  # the engine's budget: 12 rounded up to 16
  for name, path in [("base", None), *adapter_dirs]:
    alone, alone_fmt = load_chat(tiny_model_dir, path, merge=False)
    [ref] = alone.generate([ids], sampling, stop_strings=alone_fmt.template.stop_strings)
    raw = ref.text if len(ref.ids) <= 12 else alone_fmt.tokenizer.decode(ref.ids[:12])
    assert texts[name] == _clean(raw, fmt), name
  assert len(set(texts.values())) == len(texts), "each adapter must change the answer"


def _clean(raw, fmt):
  from telugu_jax.chat_format import clean_answer
  from telugu_jax.rows import cut_at_stop

  return clean_answer(cut_at_stop(raw, fmt.template.stop_strings)[0], fmt.template)
