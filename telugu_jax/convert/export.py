"""telugu-jax model directory -> a Hugging Face folder (`hf`) or a PEFT adapter (`peft`).

`hf` writes safetensors that `LlamaForCausalLM.from_pretrained` loads (names from the same table the
import uses, run in reverse), config.json, the tokenizer with the chat template the model records in
model.json and generation_config.json. A tokenizer that cannot write that template (a base whose nmt_nfkc
tokenizer turns the "\n" separator into a space) still gets its weights, tokenizer and configs exported: only
`chat_template` is left out, with a one-line note. A directory with a LoRA adapter is exported merged
(`merge=True`) or as its base alone (`base_only=True`); one of the two must be asked for, so an adapter is
never dropped silently. `peft` writes adapter_config.json and adapter_model.safetensors for
`PeftModel.from_pretrained(base, DST)` (and, with `with_base`, the base as a Hugging Face folder in
DST/base).

Exports are written to a temporary sibling and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator

import numpy as np
from flax import traverse_util

from telugu_jax.chat_format import template_problem
from telugu_jax.convert import hf_files, keymaps, peft_io
from telugu_jax.convert.errors import ExportError
from telugu_jax.convert.load_torch import numpy_to_torch
from telugu_jax.convert.to_orbax import NP_DTYPES
from telugu_jax.errors import OutputExistsError
from telugu_jax.model.io import LoadedModel, is_model_dir, load_model, read_meta, temp_sibling
from telugu_jax.model.lora import merge_lora

DEFAULT_SHARD_BYTES = 5 * 2**30  # as transformers' save_pretrained


@contextlib.contextmanager
def atomic_dir(dst: str, overwrite: bool) -> Iterator[str]:
  """Yield a temporary sibling of `dst`; rename it to `dst` only when the block succeeds."""
  dst = os.path.abspath(dst)
  if os.path.exists(dst) and not overwrite:
    raise OutputExistsError(f"{dst} exists; pass overwrite=True (or --overwrite) to replace it")
  tmp = temp_sibling(dst)  # also removes what an export killed half-way left beside dst
  try:
    yield tmp
    if os.path.exists(dst):
      shutil.rmtree(dst)
    os.replace(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def hf_state_dict(flat: dict, config, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, torch-layout array in `dtype`) for every leaf of the flat `{path: array}` params, popping
  each leaf as it is converted so the source copy is freed while the output grows."""
  for path in sorted(flat):
    name = keymaps.HF.source_name(path)
    if name is None:
      raise ExportError(f"parameter {path} has no Hugging Face name")
    x = np.asarray(flat.pop(path)).astype(NP_DTYPES[dtype], copy=False)
    yield name, np.ascontiguousarray(keymaps.HF.transform(path).to_torch(x, config))


def write_safetensors(items: Iterator[tuple[str, np.ndarray]], dst: str, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                      prefix: str = "model") -> list[str]:
  """Write `prefix.safetensors`, or shards with `prefix.safetensors.index.json` past `max_shard_bytes`."""
  from safetensors.torch import save_file

  shards, current, size, total, weight_map = [], {}, 0, 0, {}
  for name, x in items:
    if current and size + x.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = x
    size += x.nbytes
    total += x.nbytes
  shards.append(current)
  files = []
  for i, shard in enumerate(shards):
    file = f"{prefix}.safetensors" if len(shards) == 1 else f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file({k: numpy_to_torch(v) for k, v in shard.items()}, os.path.join(dst, file), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(shard, file))
    files.append(file)
    shard.clear()
  if len(shards) > 1:
    with open(os.path.join(dst, f"{prefix}.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
  return files


def _write_hf(dst: str, model: LoadedModel, flat: dict, dtype: str, max_shard_bytes: int, verify: bool,
              log: Callable[[str], None]) -> None:
  config, tok = model.config, model.tokenizer
  write_safetensors(hf_state_dict(flat, config, dtype), dst, max_shard_bytes)
  special = {} if tok is None else {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
                                    "pad_token_id": tok.pad_id}
  hf_config = config.replace(param_dtype=dtype).to_hf(torch_dtype=dtype, **special)
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=1)
  _write_chat_files(dst, model, verify, log)


def _write_chat_files(dst: str, model: LoadedModel, verify: bool, log: Callable[[str], None]) -> None:
  tok = model.tokenizer
  if tok is None:
    log(f"warning: {model.path} has no tokenizer; the export has no tokenizer, chat template or generation config")
    return
  template = model.chat_template   # the one the model was trained with (model.json)
  if problem := template_problem(tok, template):
    # The weights, tokenizer and configs are still what a base's user needs; only the chat template cannot be
    # written for this tokenizer (e.g. a plain base whose nmt_nfkc tokenizer turns the "\n" separator into a space).
    log(f"note: no chat_template in the export: {problem} (train with a template it keeps: "
        "python -m telugu_jax.tokenizer inspect)")
    template = None
  hf_files.write_tokenizer_files(tok, dst, template=template, model_max_length=model.config.max_seq_len)
  hf_files.write_generation_config(dst, tok)
  if verify:
    hf_files.verify_tokenizer(dst, tok, template)


def _source_of(model: LoadedModel) -> str | None:
  """The Hugging Face folder the base was converted from, if known (for adapter_config.json)."""
  meta = model.meta
  if meta.get("base_abs") and is_model_dir(meta["base_abs"]):
    meta = read_meta(meta["base_abs"])
  src = meta.get("converted_from") or {}
  return src.get("path") if src.get("layout") == "hf" else None


def export_hf(checkpoint: str | os.PathLike, dst: str | os.PathLike, *, merge: bool = False, base_only: bool = False,
              dtype: str | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False,
              verify: bool = True, log: Callable[[str], None] = print) -> str:
  """A Hugging Face folder from a model directory; returns its path.

  Args:
    merge: merge the LoRA adapter into the weights (`W + A @ B * scale`, summed in float32).
    base_only: export the base weights of a directory that has an adapter, without it.
    dtype: float32 / bfloat16 / float16; default: the stored parameter dtype.
    verify: load the exported tokenizer with `AutoTokenizer` and require our ids (plain and chat template).
  """
  model = load_model(checkpoint)
  params = model.variables["params"]
  if "lora" in model.variables:
    if merge:
      params = merge_lora(params, model.variables["lora"], model.lora_config)
    elif not base_only:
      raise ExportError(f"{model.path} has a LoRA adapter: pass --merge to merge it into the weights, --format peft "
                        "to export the adapter for PEFT, or --base-only to export the base without it")
  elif merge:
    log(f"note: {model.path} has no LoRA adapter; exporting its weights as they are")
  dtype = dtype or model.config.param_dtype
  if dtype not in NP_DTYPES:
    raise ExportError(f"dtype {dtype!r}: choose one of {sorted(NP_DTYPES)}")
  flat = traverse_util.flatten_dict(params, sep="/")
  del params
  model.variables.clear()  # `flat` holds the only references: leaves are freed as they are written
  with atomic_dir(os.fspath(dst), overwrite) as tmp:
    _write_hf(tmp, model, flat, dtype, max_shard_bytes, verify, log)
  log(f"wrote a Hugging Face model ({dtype}{', LoRA merged' if merge else ''}) to {dst}")
  return os.path.abspath(dst)


def export_peft(checkpoint: str | os.PathLike, dst: str | os.PathLike, *, with_base: bool = False,
                overwrite: bool = False, verify: bool = True, log: Callable[[str], None] = print) -> str:
  """A PEFT adapter folder (adapter_config.json + adapter_model.safetensors + tokenizer files)."""
  model = load_model(checkpoint)
  if "lora" not in model.variables:
    raise ExportError(f"{model.path} has no LoRA adapter to export; use --format hf for the full model")
  final = os.path.abspath(os.fspath(dst))
  base_name = os.path.join(final, "base") if with_base else _source_of(model)
  with atomic_dir(final, overwrite) as tmp:
    peft_io.write_adapter(tmp, model.variables["lora"], model.lora_config, base_name)
    _write_chat_files(tmp, model, verify, log)
    if with_base:
      os.makedirs(os.path.join(tmp, "base"))
      _write_hf(os.path.join(tmp, "base"), model, traverse_util.flatten_dict(model.variables["params"], sep="/"),
                model.config.param_dtype, DEFAULT_SHARD_BYTES, False, log)
  if base_name is None:
    log("note: the base model's Hugging Face folder is unknown; load with PeftModel.from_pretrained(base, DST) "
        "(or export with --with-base)")
  log(f"wrote a PEFT adapter (rank {model.lora_config.rank}) to {dst}")
  return final
