"""Which checkpoint layout a path holds, and its architecture config.

Understood layouts:
  hf          a folder with config.json and model.safetensors, sharded safetensors with
              model.safetensors.index.json, or pytorch_model.bin (sharded too, with its index);
  meta        a folder with params.json and consolidated.NN.pth (one or more model-parallel shards);
  state_dict  one .pt/.pth/.bin/.safetensors file from a custom training script; its config comes from
              --config (HF config.json, Meta params.json or our LlamaConfig JSON) or --preset, its names
              are HF or Meta names, or are mapped with --key-map;
  peft        a folder with adapter_config.json (imported as our `lora` collection; needs --base).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from telugu_jax.convert import load_torch
from telugu_jax.convert.errors import ConfigMismatchError, ConversionError, UnknownLayoutError
from telugu_jax.model.config import LlamaConfig, RopeScaling

LAYOUTS = ("hf", "meta", "state_dict", "peft")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                   "pytorch_model.bin")
UNDERSTOOD = (
    "Understood layouts: a Hugging Face folder (config.json + model.safetensors, sharded safetensors with "
    "model.safetensors.index.json, or pytorch_model.bin), a Meta folder (params.json + consolidated.NN.pth), "
    "a PEFT adapter folder (adapter_config.json, with --base), or a single state-dict file "
    f"({'/'.join(STATE_DICT_SUFFIXES)}) with --config or --preset. Pass --format to choose one, and "
    "--key-map FILE when the tensor names are neither Hugging Face nor Meta names.")


def meta_shards(folder: str) -> list[str]:
  return sorted(glob.glob(os.path.join(folder, "consolidated.*.pth")))


def detect_layout(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ConversionError(f"{path} does not exist")
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "model.json")):
      raise UnknownLayoutError(f"{path} is already a telugu-jax model directory; it needs no conversion. "
                               "To go back to PyTorch use `python -m telugu_jax.export`.")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
      return "peft"
    if os.path.isfile(os.path.join(path, "params.json")) and meta_shards(path):
      return "meta"
    if os.path.isfile(os.path.join(path, "config.json")):
      if any(os.path.isfile(os.path.join(path, f)) for f in HF_WEIGHT_FILES):
        return "hf"
      raise UnknownLayoutError(f"{path} has config.json but none of the weight files {list(HF_WEIGHT_FILES)}. "
                               + UNDERSTOOD)
    found = sorted(os.listdir(path))[:10]
    raise UnknownLayoutError(f"cannot tell the checkpoint layout of the folder {path} (it holds {found}). "
                             + UNDERSTOOD)
  if path.endswith(STATE_DICT_SUFFIXES):
    return "state_dict"
  raise UnknownLayoutError(f"cannot tell the checkpoint layout of the file {path}. " + UNDERSTOOD)


# ---- configs -------------------------------------------------------------------------------------

def meta_config(params: Mapping, embed_shape: tuple[int, ...], ffn_shape: tuple[int, ...] | None,
                notes: list[str] | None = None) -> dict:
  """LlamaConfig fields from Meta's params.json. Sizes the file leaves out (vocab_size -1, no
  multiple_of) are read from the weights' shapes; sizes it gives are checked against them later."""
  dim, n_heads = params["dim"], params["n_heads"]
  vocab = params.get("vocab_size", -1)
  if vocab is None or vocab < 0:
    vocab = embed_shape[0] if embed_shape[1] == dim else embed_shape[1]
  if "multiple_of" in params:  # the reference code's rule for the SwiGLU width
    hidden = int(2 * (4 * dim) / 3)
    if params.get("ffn_dim_multiplier") is not None:
      hidden = int(params["ffn_dim_multiplier"] * hidden)
    ffn = params["multiple_of"] * ((hidden + params["multiple_of"] - 1) // params["multiple_of"])
  elif ffn_shape is not None:
    ffn = ffn_shape[0]
  else:
    raise ConversionError("params.json has no multiple_of and the checkpoint has no feed_forward.w1 weight")
  scaling = None
  if params.get("use_scaled_rope"):  # the reference code's hard-coded values (factor 8 in Llama 3.1)
    factor = params.get("rope_scaling_factor") or params.get("scale_factor")
    if factor is None and notes is not None:
      notes.append("params.json sets use_scaled_rope without a factor: assuming Llama 3.1's 8 (Llama 3.2 1B/3B "
                   'use 32: then pass --set \'rope_scaling={"factor": 32.0}\')')
    scaling = RopeScaling(factor=float(factor or 8.0), low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192)
  return dict(vocab_size=vocab, d_model=dim, n_layers=params["n_layers"], n_heads=n_heads,
              n_kv_heads=params.get("n_kv_heads") or n_heads, head_dim=dim // n_heads, ffn_dim=ffn,
              rms_eps=params.get("norm_eps", 1e-5), rope_theta=float(params.get("rope_theta", 10000.0)),
              rope_scaling=scaling, max_seq_len=params.get("max_seq_len", 2048), tie_embeddings=False)


def config_from_file(path: str | os.PathLike) -> tuple[str, dict]:
  """Read a config JSON of any of three kinds; returns (kind, dict): "hf", "meta" or "ours"."""
  try:
    with open(path) as f:
      d = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConversionError(f"cannot read config {path}: {e}") from None
  if isinstance(d, Mapping) and isinstance(d.get("model"), Mapping) and "d_model" in d["model"]:
    return "ours", dict(d["model"])  # a telugu-jax model.json
  if isinstance(d, Mapping) and "d_model" in d:
    return "ours", dict(d)
  if isinstance(d, Mapping) and "hidden_size" in d:
    return "hf", dict(d)
  if isinstance(d, Mapping) and "dim" in d and "n_layers" in d:
    return "meta", dict(d)
  raise ConversionError(f"{path} is not a model config: expected a Hugging Face config.json (hidden_size, ...), a "
                        "Meta params.json (dim, n_layers, ...) or a telugu-jax LlamaConfig (d_model, ...)")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
  """`--set field=value` pairs; values are JSON (numbers, true/false, null) or plain strings."""
  out = {}
  known = {f.name for f in dataclasses.fields(LlamaConfig)}
  for item in items or []:
    key, sep, value = item.partition("=")
    if not sep or key not in known:
      raise ConversionError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(known)}")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
    if key == "rope_scaling" and isinstance(out[key], Mapping):
      out[key] = RopeScaling(**out[key])
  return out


def apply_overrides(config: LlamaConfig, overrides: Mapping[str, Any]) -> LlamaConfig:
  try:
    return config.replace(**overrides)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"invalid config override: {e}") from None


# ---- opening a source ----------------------------------------------------------------------------

@dataclasses.dataclass
class Source:
  layout: str
  reader: Any                  # a load_torch reader
  config: LlamaConfig | None   # None: the caller must supply one (bare state dict without --config)
  tokenizer_dir: str | None    # where a tokenizer was found next to the weights
  notes: list[str]             # what was done that the user should know (stripped prefixes, ...)


def _hf_reader(folder: str):
  names = {f: os.path.join(folder, f) for f in HF_WEIGHT_FILES}
  if os.path.isfile(names["model.safetensors.index.json"]):
    return load_torch.SafetensorsReader(load_torch.read_index(names["model.safetensors.index.json"]))
  if os.path.isfile(names["model.safetensors"]):
    return load_torch.SafetensorsReader([names["model.safetensors"]])
  if os.path.isfile(names["pytorch_model.bin.index.json"]):
    return load_torch.TensorDictReader.from_files(load_torch.read_index(names["pytorch_model.bin.index.json"]))
  return load_torch.TensorDictReader.from_files([names["pytorch_model.bin"]])


def _tokenizer_dir(*folders: str) -> str | None:
  for folder in folders:
    if any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.model", "tokenizer.json")):
      return folder
  return None


def open_source(path: str | os.PathLike, layout: str, *, config_file: str | None = None) -> Source:
  """Open the weights lazily and read the architecture config (see the module docstring)."""
  try:
    return _open_source(os.path.abspath(os.fspath(path)), layout, config_file)
  except ConversionError:
    raise
  except (ValueError, KeyError, TypeError) as e:  # LlamaConfig.from_hf/from_dict on a config it cannot use
    what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
    raise ConversionError(f"cannot use the architecture config of {config_file or path}: {what}") from None


def _open_source(path: str, layout: str, config_file: str | None) -> Source:
  notes: list[str] = []
  if layout == "hf":
    if not os.path.isfile(os.path.join(path, "config.json")):
      raise UnknownLayoutError(f"{path} has no config.json, so it is not a Hugging Face folder. " + UNDERSTOOD)
    config = LlamaConfig.from_hf(config_file or path)
    return Source("hf", _hf_reader(path), config, _tokenizer_dir(path), notes)
  if layout == "meta":
    shards = meta_shards(path)
    params_file = config_file or os.path.join(path, "params.json")
    if not shards or not os.path.isfile(params_file):
      raise UnknownLayoutError(f"{path} lacks params.json or consolidated.NN.pth. " + UNDERSTOOD)
    kind, params = config_from_file(params_file)
    if kind != "meta":
      raise ConversionError(f"{params_file} is not a Meta params.json (needs dim, n_layers, n_heads)")
    reader = load_torch.MetaShardsReader(shards, dim=params["dim"])
    if len(shards) > 1:
      notes.append(f"joined {len(shards)} model-parallel shards")
    names = set(reader.names())
    if "tok_embeddings.weight" not in names:
      raise ConversionError(f"{shards[0]} has no tok_embeddings.weight; is it a Meta Llama checkpoint?")
    ffn = reader.shape("layers.0.feed_forward.w1.weight") if "layers.0.feed_forward.w1.weight" in names else None
    config = LlamaConfig(**meta_config(params, reader.shape("tok_embeddings.weight"), ffn, notes))
    return Source("meta", reader, config, _tokenizer_dir(path, os.path.dirname(path)), notes)
  if layout == "state_dict":
    if not os.path.isfile(path):
      raise UnknownLayoutError(f"layout state_dict needs a single file, got {path}. " + UNDERSTOOD)
    if path.endswith(".safetensors"):
      reader = load_torch.SafetensorsReader([path])
    else:
      sd = load_torch.find_state_dict(load_torch.load_pickle(path), path, notes)
      sd, stripped = load_torch.strip_wrapper_prefixes(sd)
      if stripped:
        notes.append(f"removed the name prefix {''.join(stripped)!r} shared by every tensor")
      reader = load_torch.TensorDictReader([sd])
    config = None
    if config_file:
      kind, d = config_from_file(config_file)
      if kind == "hf":
        config = LlamaConfig.from_hf(d)
      elif kind == "ours":
        config = LlamaConfig.from_dict(d)
      else:
        embed = next((n for n in reader.names() if re.search(r"(tok_embeddings|embed_tokens)\.weight$", n)), None)
        ffn = next((n for n in reader.names() if n.endswith("layers.0.feed_forward.w1.weight")), None)
        if embed is None:
          raise ConfigMismatchError(f"{config_file} is a Meta params.json but the checkpoint has no embedding")
        config = LlamaConfig(**meta_config(d, reader.shape(embed), ffn and reader.shape(ffn), notes))
    return Source("state_dict", reader, config, _tokenizer_dir(os.path.dirname(path)), notes)
  raise UnknownLayoutError(f"unknown --format {layout!r}. " + UNDERSTOOD)
