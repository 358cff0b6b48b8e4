"""Readers return the bits the file holds (bf16 included), and refuse broken files with a message."""

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from telugu_jax.convert.errors import ConversionError
from telugu_jax.convert.load_torch import (
    SafetensorsReader,
    TensorDictReader,
    find_state_dict,
    numpy_to_torch,
    strip_wrapper_prefixes,
)


def test_safetensors_reader_matches_the_library(tmp_path):
  torch.manual_seed(0)
  tensors = {"a": torch.randn(7, 3), "b": torch.randn(5, 2).to(torch.bfloat16), "c": torch.randn(4).half(),
             "d": torch.randn(2, 3, 4)}
  save_file(tensors, tmp_path / "x.safetensors")
  reader = SafetensorsReader([tmp_path / "x.safetensors"])
  with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
    for name in f.keys():
      got = numpy_to_torch(reader.get(name))
      assert got.dtype == f.get_tensor(name).dtype and torch.equal(got, f.get_tensor(name))
      assert reader.shape(name) == tuple(f.get_slice(name).get_shape())
  assert reader.dtype("b") == "bfloat16"


def test_broken_safetensors_files(tmp_path):
  save_file({"a": torch.randn(64, 64)}, tmp_path / "x.safetensors")
  data = (tmp_path / "x.safetensors").read_bytes()
  (tmp_path / "cut.safetensors").write_bytes(data[:-100])
  with pytest.raises(ConversionError, match="truncated: tensor 'a'"):
    SafetensorsReader([tmp_path / "cut.safetensors"])
  (tmp_path / "junk.safetensors").write_bytes(b"PK\x03\x04 this is a zip file")
  with pytest.raises(ConversionError, match="not a valid safetensors file"):
    SafetensorsReader([tmp_path / "junk.safetensors"])


def test_state_dict_finding(tmp_path):
  sd = {"module.w": torch.ones(2), "module.b": torch.zeros(3)}
  notes = []
  found = find_state_dict({"model": sd, "optimizer": {"state": {}}, "epoch": 3}, "ckpt.pt", notes)
  assert found == sd and "using the state dict under 'model'" in notes[0] and "optimizer" in notes[0]
  assert sorted(strip_wrapper_prefixes(found)[0]) == ["b", "w"]
  with pytest.raises(ConversionError, match="no state dict found"):
    find_state_dict({"config": {"lr": 1e-3}}, "ckpt.pt")
  torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # cannot be memory-mapped
  reader = TensorDictReader.from_files([tmp_path / "legacy.pt"])
  np.testing.assert_array_equal(reader.get("module.w"), np.ones(2))
