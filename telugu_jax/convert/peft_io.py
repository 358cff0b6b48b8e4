"""PEFT LoRA adapters <-> our `lora` collection.

PEFT saves `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight: [r, in]` and `lora_B.weight:
[out, r]`, scaled by `lora_alpha / r` (or `/ sqrt(r)` with `use_rslora`); ours are `lora_a: [in, r]` and
`lora_b: [r, out]` with the same scale (see `model/lora.py`), so a transpose each way is the whole map.
Features of PEFT that our LoRA cannot represent (DoRA, biases, per-layer ranks, modules_to_save, ...)
are refused with a message instead of being dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping

import numpy as np
from flax import traverse_util

from telugu_jax.convert.errors import ConfigMismatchError, ConversionError, KeyMismatchError, ShapeMismatchError
from telugu_jax.convert.load_torch import SafetensorsReader, TensorDictReader, numpy_to_torch
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.lora import ALL_TARGETS, LoraConfig

PREFIX = "base_model.model."
_GROUP = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_NAME = re.compile(r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])"
                   r"(?:\.default)?\.weight")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def peft_name(path: str) -> str:
  """`layers_3/self_attn/q_proj/lora_a` -> `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`."""
  layer, group, proj, which = path.split("/")
  ab = {"lora_a": "A", "lora_b": "B"}[which]
  return f"{PREFIX}model.layers.{layer.removeprefix('layers_')}.{group}.{proj}.lora_{ab}.weight"


def lora_to_peft(lora: Mapping) -> dict[str, np.ndarray]:
  """Our `lora` tree -> PEFT's state dict (float32, [r, in] / [out, r])."""
  flat = traverse_util.flatten_dict(lora, sep="/")
  return {peft_name(path): np.ascontiguousarray(np.asarray(x, np.float32).T) for path, x in flat.items()}


def write_adapter(dst: str, lora: Mapping, lora_config: LoraConfig, base_name_or_path: str | None) -> None:
  """adapter_config.json (written by `peft` itself) and adapter_model.safetensors."""
  from peft import LoraConfig as PeftLoraConfig
  from safetensors.torch import save_file

  alpha = int(lora_config.alpha) if float(lora_config.alpha).is_integer() else lora_config.alpha
  PeftLoraConfig(r=lora_config.rank, lora_alpha=alpha, lora_dropout=lora_config.dropout,
                 target_modules=list(lora_config.targets), use_rslora=lora_config.rslora, bias="none",
                 task_type="CAUSAL_LM", base_model_name_or_path=base_name_or_path).save_pretrained(dst)
  tensors = {k: numpy_to_torch(v) for k, v in lora_to_peft(lora).items()}
  save_file(tensors, os.path.join(dst, "adapter_model.safetensors"), metadata={"format": "pt"})


def _check_adapter_config(cfg: Mapping, path: str) -> None:
  def refuse(what: str):
    raise ConversionError(f"{path}: {what} is not supported by telugu-jax LoRA; merge this adapter into the base "
                          "with peft's merge_and_unload() and convert the merged model instead")

  if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
    raise ConversionError(f"{path}: peft_type {cfg.get('peft_type')!r}; only LoRA adapters can be imported")
  if cfg.get("use_dora"):
    refuse("DoRA (use_dora=true)")
  if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
    refuse(f"bias={cfg.get('bias')!r}")
  if cfg.get("modules_to_save"):
    refuse(f"modules_to_save={cfg['modules_to_save']}")
  if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
    refuse("a per-module rank_pattern/alpha_pattern")
  if cfg.get("fan_in_fan_out"):
    refuse("fan_in_fan_out=true")
  if cfg.get("layer_replication") or cfg.get("target_parameters"):
    refuse("layer_replication/target_parameters")


def read_adapter(folder: str | os.PathLike, config: LlamaConfig) -> tuple[LoraConfig, dict, list[str]]:
  """A PEFT adapter folder -> (LoraConfig, our `lora` tree in float32, notes).

  Raises KeyMismatchError for tensors that are not LoRA A/B of a Llama projection, ShapeMismatchError /
  ConfigMismatchError when the adapter does not fit `config`.
  """
  from telugu_jax.convert.to_orbax import expected_shapes

  folder = os.fspath(folder)
  cfg_file = os.path.join(folder, "adapter_config.json")
  with open(cfg_file) as f:
    cfg = json.load(f)
  _check_adapter_config(cfg, cfg_file)
  weights = next((os.path.join(folder, f) for f in ADAPTER_FILES if os.path.isfile(os.path.join(folder, f))), None)
  if weights is None:
    raise ConversionError(f"{folder} has adapter_config.json but no {' or '.join(ADAPTER_FILES)}")
  reader = (SafetensorsReader([weights]) if weights.endswith(".safetensors")
            else TensorDictReader.from_files([weights]))
  try:
    found, unknown = {}, []
    for name in reader.names():
      m = _NAME.fullmatch(name)
      if m is None or m.group(3) not in _GROUP or _GROUP[m.group(3)] != m.group(2):
        unknown.append(name)
        continue
      found[f"layers_{m.group(1)}/{m.group(2)}/{m.group(3)}/lora_{m.group(4).lower()}"] = name
    if unknown:
      raise KeyMismatchError(
          f"{weights}: {len(unknown)} tensor(s) are not LoRA weights of a Llama projection "
          f"({', '.join(ALL_TARGETS)}), e.g. {sorted(unknown)[:3]}; adapters on embeddings or lm_head cannot be "
          "imported (merge the adapter into the base with peft and convert the merged model instead)")
    if not found:
      raise KeyMismatchError(f"{weights} holds no LoRA weights")
    targets = tuple(t for t in ALL_TARGETS if any(p.split("/")[2] == t for p in found))
    rank = reader.shape(next(n for p, n in found.items() if p.endswith("lora_a")))[0]
    if cfg.get("r") not in (None, rank):
      raise ConfigMismatchError(f"{cfg_file} says r={cfg['r']} but the weights have rank {rank}")
    lora_config = LoraConfig(rank=rank, alpha=float(cfg.get("lora_alpha", 8)),
                             dropout=float(cfg.get("lora_dropout", 0)), targets=targets,
                             rslora=bool(cfg.get("use_rslora", False)))
    expected = expected_shapes(config, lora_config)["lora"]
    extra = sorted(set(found) - set(expected))
    if extra:
      raise ConfigMismatchError(f"the adapter has weights for {extra[:3]}, which the base model (with "
                                f"{config.n_layers} layers) does not have: is --base the model it was trained on?")
    notes, flat = [], {}
    wrong = []
    for path, shape in expected.items():
      if path not in found:
        flat[path] = np.zeros(shape, np.float32)
        continue
      x = reader.get(found[path]).astype(np.float32).T
      if x.shape != tuple(shape):
        wrong.append(f"  {found[path]}: expected {list(shape[::-1])}, found {list(x.shape[::-1])}")
      flat[path] = np.ascontiguousarray(x)
    if wrong:
      raise ShapeMismatchError("the adapter does not fit the base model (is --base the model it was trained on?):\n"
                               + "\n".join(wrong[:12]))
    absent = sorted({p.rsplit("/", 1)[0] for p in expected if p not in found})
    if absent:
      notes.append(f"{len(absent)} projection(s) have no adapter in this file (e.g. {absent[0]}); they get zero "
                   "LoRA weights, which leave them unchanged as in PEFT")
    return lora_config, traverse_util.unflatten_dict(flat, sep="/"), notes
  finally:
    reader.close()


def import_peft(adapter: str | os.PathLike, base: str | os.PathLike, dst: str | os.PathLike, *,
                overwrite: bool = False, log: Callable[[str], None] = print) -> str:
  """Write an adapter-only model directory at `dst` holding the PEFT adapter as our `lora` collection."""
  from telugu_jax.model.io import read_meta, save_model

  config = LlamaConfig.from_dict(read_meta(base)["model"])
  lora_config, lora, notes = read_adapter(adapter, config)
  for note in notes:
    log("note: " + note)
  log(f"importing a rank-{lora_config.rank} adapter on {', '.join(lora_config.targets)} -> {dst}")
  extra = {"converted_from": {"path": os.path.abspath(adapter), "layout": "peft"}}
  return save_model(dst, config, lora=lora, lora_config=lora_config, base=os.fspath(base), extra=extra,
                    overwrite=overwrite)
