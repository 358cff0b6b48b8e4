"""The on-disk model directory: what conversion writes, training reads and writes, chat and export load.

    DIR/
      model.json    {"format": "telugu-jax-model", "version": 1, "model": LlamaConfig, "lora": LoraConfig|null,
                     "base": path|null, "chat_template": {"user", "assistant", "sep", "turn_sep"}}
      params/       Orbax checkpoint of the `params` pytree (absent in an adapter-only directory)
      lora/         Orbax checkpoint of the `lora` pytree (present when an adapter is stored)
      tokenizer/    tokenizer.model or tokenizer.json (+ tokenizer_config.json)

`chat_template` is the `ChatTemplate` the model was trained with (training and convert write it; a directory
without one was written before templates were recorded and reads as the default template).

An adapter-only directory names its `base` (relative to itself, or absolute); `load_model` follows it,
so `chat --checkpoint runs/demo/sft` works whether `sft` holds a merged model or only an adapter.

Directories are written to a temporary sibling (`.tmp-NAME-*`) and renamed into place at the end: a failed
or killed save never leaves a half-written directory that looks valid, and the next save to the same place
removes what a killed one left (`temp_sibling`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from telugu_jax.errors import OutputExistsError, UserError
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.lora import LoraConfig

FORMAT = "telugu-jax-model"
META = "model.json"


class ModelDirError(UserError, FileNotFoundError):
  """A model directory that is missing, incomplete or unreadable: the message names the file."""


def temp_sibling(path: str) -> str:
  """A fresh temporary directory beside `path`, after removing those that killed saves to `path` left."""
  parent, prefix = os.path.dirname(path), ".tmp-" + os.path.basename(path) + "-"
  os.makedirs(parent, exist_ok=True)
  for name in os.listdir(parent):
    if name.startswith(prefix) and os.path.isdir(os.path.join(parent, name)):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  return tempfile.mkdtemp(prefix=prefix, dir=parent)


@dataclasses.dataclass
class LoadedModel:
  config: LlamaConfig
  variables: dict                 # {"params": ...} and, with an adapter, {"lora": ...}
  lora_config: LoraConfig | None
  tokenizer: Any | None           # telugu_jax.tokenizer.Tokenizer
  path: str
  meta: dict

  @property
  def chat_template(self):
    """The chat template this model was trained with (model.json "chat_template"; the default when absent)."""
    from telugu_jax.chat_format import ChatTemplate

    return ChatTemplate.from_dict(self.meta.get("chat_template"))

  def chat_format(self, tokenizer: Any = None):
    """`ChatFormat` of this model's tokenizer (or `tokenizer`) and its recorded template."""
    from telugu_jax.chat_format import ChatFormat

    return ChatFormat(tokenizer if tokenizer is not None else self.tokenizer, self.chat_template)

  def model(self, **kw):
    from telugu_jax.model.llama import Llama

    return Llama(self.config, lora=self.lora_config if "lora" in self.variables else None, **kw)


def _save_tree(path: str, tree: Any) -> None:
  # Measured on the 300M preset (1.3 GB of random float32 weights, 2 CPU cores):
  # - jax.Arrays go to Orbax as they are: it copies NumPy leaves into new arrays first (+1.2 GB peak).
  # - no zstd compression: it saved 8% of disk but took 12 s instead of 3.5 s and +1.2 GB of peak memory.
  # The on-disk format is the same Orbax PyTree checkpoint; `StandardCheckpointer` restores it.
  # A model directory is written by one process (training: process 0, with the weights gathered on every
  # process first): Orbax must not wait at a barrier for processes that do not write.
  tree = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), tree)
  alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
  kw = {"multiprocessing_options": alone} if jax.process_count() > 1 else {}
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False, **kw), **kw) as ckptr:
    ckptr.save(os.path.abspath(path), args=ocp.args.PyTreeSave(tree))


def _restore_tree(path: str) -> Any:
  try:
    with ocp.StandardCheckpointer() as ckptr:
      tree = ckptr.restore(os.path.abspath(path))
  except (ValueError, OSError, RuntimeError, KeyError) as e:  # tensorstore/JSON errors of a cut-short file
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ModelDirError(f"{path}: the weights cannot be read ({type(e).__name__}: {first}); the directory is "
                        "incomplete or corrupt (a copy or download cut short?): copy, convert or export it "
                        "again") from None
  return jax.tree_util.tree_map(np.asarray, tree)


def is_model_dir(path: str | os.PathLike) -> bool:
  return os.path.isfile(os.path.join(path, META))


def save_model(path: str | os.PathLike, config: LlamaConfig, *, params: Any = None, lora: Any = None,
               lora_config: LoraConfig | None = None, base: str | None = None, tokenizer: Any = None,
               extra: dict | None = None, overwrite: bool = False) -> str:
  """Write a model directory atomically. Give `params` (full weights), or `lora` + `base`, or both."""
  path = os.path.abspath(os.fspath(path))
  if params is None and (lora is None or base is None):
    raise ValueError("save_model needs params, or an adapter (lora) together with the base it applies to")
  if lora is not None and lora_config is None:
    raise ValueError("saving an adapter needs its lora_config")
  if os.path.exists(path) and not overwrite:
    raise OutputExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
  tmp = temp_sibling(path)
  try:
    if params is not None:
      _save_tree(os.path.join(tmp, "params"), params)
    if lora is not None:
      _save_tree(os.path.join(tmp, "lora"), lora)
    if tokenizer is not None:
      tokenizer.save(os.path.join(tmp, "tokenizer"))
    # The base is recorded both relative to this directory (valid when the two move together) and
    # absolute (valid when only this directory moves); loading tries them in that order.
    base_abs = None if base is None else os.path.abspath(base)
    meta = {"format": FORMAT, "version": 1, "model": config.to_dict(),
            "lora": None if lora_config is None else dataclasses.asdict(lora_config),
            "base": None if base is None else os.path.relpath(base_abs, path), "base_abs": base_abs,
            **(extra or {})}
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(meta, f, indent=1, ensure_ascii=False)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def resolve_model_dir(path: str | os.PathLike) -> str:
  """A model directory, or a training run folder whose final model is in `model/`."""
  path = os.fspath(path)
  if not is_model_dir(path) and is_model_dir(os.path.join(path, "model")):
    return os.path.join(path, "model")
  return path


def read_meta(path: str | os.PathLike) -> dict:
  path = resolve_model_dir(path)
  meta_file = os.path.join(path, META)
  if not os.path.isfile(meta_file):
    raise ModelDirError(
        f"{path} is not a telugu-jax model directory (no {META}). Convert a PyTorch/HF checkpoint with "
        "`python -m telugu_jax.convert --from SRC --to DIR`, or run `make demo` to make a small one.")
  try:
    with open(meta_file, encoding="utf-8") as f:
      meta = json.load(f)
  except ValueError as e:
    raise ModelDirError(f"{meta_file}: not valid JSON ({e}); the model directory is incomplete or corrupt: copy, "
                        "convert or export it again") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    meta = meta if isinstance(meta, dict) else {}
    raise ModelDirError(f"{meta_file} has format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


def load_adapter(path: str | os.PathLike) -> tuple[Any, LoraConfig, dict]:
  """(lora tree, LoraConfig, model.json) of a directory that stores an adapter; the base is not loaded."""
  path = resolve_model_dir(path)
  meta = read_meta(path)
  lora_dir = os.path.join(path, "lora")
  if not meta.get("lora") or not os.path.isdir(lora_dir):
    raise ModelDirError(f"{path} holds no LoRA adapter (no lora/ folder or no lora config in {META})")
  return _restore_tree(lora_dir), LoraConfig(**meta["lora"]), meta


def load_model(path: str | os.PathLike, *, with_tokenizer: bool = True, _depth: int = 0) -> LoadedModel:
  """Load a model directory, following `base` for adapter-only directories."""
  from telugu_jax.tokenizer import check_vocab, load_tokenizer

  path = os.path.abspath(resolve_model_dir(path))
  meta = read_meta(path)
  config = LlamaConfig.from_dict(meta["model"])
  lora_config = LoraConfig(**meta["lora"]) if meta.get("lora") else None
  variables: dict = {}
  tokenizer = None
  if meta.get("base"):
    if _depth > 4:
      raise ModelDirError(f"{path}: chain of base directories too deep (a cycle?)")
    candidates = [os.path.normpath(os.path.join(path, meta["base"])), meta.get("base_abs")]
    base_path = next((c for c in candidates if c and is_model_dir(c)), None)
    if base_path is None:
      raise ModelDirError(f"{path} is an adapter for the base model at {candidates[0]}, which is missing")
    base = load_model(base_path, with_tokenizer=with_tokenizer, _depth=_depth + 1)
    variables["params"], tokenizer = base.variables["params"], base.tokenizer
  if os.path.isdir(os.path.join(path, "params")):
    variables["params"] = _restore_tree(os.path.join(path, "params"))
  if os.path.isdir(os.path.join(path, "lora")):
    variables["lora"] = _restore_tree(os.path.join(path, "lora"))
  if "params" not in variables:
    raise ModelDirError(f"{path} holds no weights (no params/ and no base)")
  if with_tokenizer and os.path.isdir(os.path.join(path, "tokenizer")):
    tokenizer = load_tokenizer(os.path.join(path, "tokenizer"))
  if tokenizer is not None:
    check_vocab(tokenizer, config.vocab_size)
  return LoadedModel(config=config, variables=variables, lora_config=lora_config, tokenizer=tokenizer,
                     path=path, meta=meta)
