"""Model directories: save/load round trip, adapter-only directories follow their base, atomic writes."""

import jax
import numpy as np
import pytest

from telugu_jax.model import Llama, LlamaConfig, LoraConfig
from telugu_jax.model.io import ModelDirError, load_model, save_model


def test_round_trip_full_and_adapter(tmp_path, sp_tokenizer):
  cfg = LlamaConfig.tiny(vocab_size=sp_tokenizer.vocab_size)
  lcfg = LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj"))
  variables = Llama(cfg, lora=lcfg).init_variables(jax.random.key(0))
  save_model(tmp_path / "base", cfg, params=variables["params"], tokenizer=sp_tokenizer)
  save_model(tmp_path / "sft", cfg, lora=variables["lora"], lora_config=lcfg, base=str(tmp_path / "base"))

  base = load_model(tmp_path / "base")
  assert base.config == cfg and base.lora_config is None and set(base.variables) == {"params"}
  chex_equal = jax.tree_util.tree_map(np.array_equal, base.variables["params"], variables["params"])
  assert all(jax.tree_util.tree_leaves(chex_equal))
  assert base.tokenizer.encode("తెలుగు") == sp_tokenizer.encode("తెలుగు")

  sft = load_model(tmp_path / "sft")  # adapter-only: params and tokenizer come from the base
  assert sft.lora_config == lcfg and set(sft.variables) == {"params", "lora"}
  tokens = np.array([[3, 5, 7, 9]])
  np.testing.assert_array_equal(sft.model().apply(sft.variables, tokens),
                                Llama(cfg, lora=lcfg).apply(variables, tokens))
  # The base is stored relative to the adapter, so the pair can be moved together.
  (tmp_path / "moved").mkdir()
  (tmp_path / "base").rename(tmp_path / "moved" / "base")
  (tmp_path / "sft").rename(tmp_path / "moved" / "sft")
  assert set(load_model(tmp_path / "moved" / "sft").variables) == {"params", "lora"}


def test_errors_and_atomicity(tmp_path):
  with pytest.raises(ModelDirError, match="python -m telugu_jax.convert"):
    load_model(tmp_path)
  cfg = LlamaConfig.tiny()
  params = Llama(cfg).init_variables(jax.random.key(0))["params"]
  save_model(tmp_path / "m", cfg, params=params)
  with pytest.raises(FileExistsError, match="overwrite"):
    save_model(tmp_path / "m", cfg, params=params)
  bad = {"not": object()}  # cannot be checkpointed: the save fails half-way
  with pytest.raises(Exception):  # noqa: B017 - whatever Orbax raises, nothing must be left behind
    save_model(tmp_path / "broken", cfg, params=bad)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
