"""PyTorch checkpoint -> telugu-jax model directory (Orbax `params` + config + tokenizer).

Everything that can be checked before a tensor is read is checked first: the layout, the config, every
name (`keymaps.make_plan`), every shape against `jax.eval_shape` of the model, and the tokenizer's
vocabulary against the embedding table. Then tensors are read one at a time, converted (dtype,
transpose, Meta's rotary order) and moved into a JAX array, so peak memory stays near one copy of the
model in the target dtype. The directory is written by `save_model`, which renames a finished
temporary directory into place: a failed conversion leaves nothing that looks valid.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
from telugu_jax.convert import keymaps
from telugu_jax.convert.errors import ConfigMismatchError, ConversionError, ShapeMismatchError
from telugu_jax.convert.layouts import Source, apply_overrides, detect_layout, open_source
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.io import save_model
from telugu_jax.model.llama import Llama

NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
             "float16": np.dtype(np.float16)}


def expected_shapes(config: LlamaConfig, lora=None) -> dict[str, dict[str, tuple]]:
  """{collection: {path: shape}} of the model's variables, from `jax.eval_shape` (nothing allocated)."""
  variables = jax.eval_shape(lambda: Llama(config, lora=lora).init_variables(jax.random.key(0)))
  return {col: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
          for col, tree in variables.items()}


def _dims(path: str, shape: tuple) -> list[tuple[str, int]]:
  """(config field, value) pairs that a tensor's shape pins down, to name config/weights disagreements."""
  if path == "embed_tokens/embedding":
    return [("vocab_size", shape[0]), ("hidden_size (d_model)", shape[1])]
  if path == "lm_head":
    return [("hidden_size (d_model)", shape[0]), ("vocab_size", shape[1])]
  if path.endswith("mlp/gate_proj/kernel") or path.endswith("mlp/up_proj/kernel"):
    return [("hidden_size (d_model)", shape[0]), ("intermediate_size (ffn_dim)", shape[1])]
  if path.endswith("self_attn/q_proj/kernel"):
    return [("hidden_size (d_model)", shape[0]), ("num_attention_heads * head_dim", shape[1])]
  if path.endswith("self_attn/k_proj/kernel"):
    return [("hidden_size (d_model)", shape[0]), ("num_key_value_heads * head_dim", shape[1])]
  return []


def check_shapes(plan: keymaps.Plan, reader, expected: Mapping[str, tuple], source_kind: str = "config") -> None:
  """Every tensor's shape (after its transform) must equal the model's; raise with all mismatches."""
  wrong = []
  for a in plan.assignments:
    found = a.transform.our_shape(reader.shape(a.source))
    if found != tuple(expected[a.target]):
      wrong.append((a, found))
  if not wrong:
    return
  disagree = collections.OrderedDict()
  for a, found in wrong:
    for (field, want), (_, have) in zip(_dims(a.target, expected[a.target]), _dims(a.target, found), strict=True):
      if want != have and field not in disagree:
        disagree[field] = (want, have, a.source)
  lines = [f"  {a.source} -> {a.target}: expected {list(expected[a.target])}, found {list(found)} "
           f"(in our [in, out] layout)" for a, found in wrong]
  if disagree:
    fields = "; ".join(f"{f}: the {source_kind} says {want}, the weights have {have} ({src})"
                       for f, (want, have, src) in disagree.items())
    raise ConfigMismatchError(f"the {source_kind} and the weights disagree: {fields}. Fix the {source_kind} "
                              "(or override a field with --set FIELD=VALUE).\n" + "\n".join(lines[:keymaps.MAX_LISTED]))
  raise ShapeMismatchError(f"{len(wrong)} tensor(s) have the wrong shape:\n" + "\n".join(lines[:keymaps.MAX_LISTED]))


def resolve_dtype(dtype: str | None, reader, plan: keymaps.Plan) -> str:
  """The parameter dtype to store: as asked, or the checkpoint's own ("auto")."""
  if dtype and dtype != "auto":
    if dtype not in NP_DTYPES:
      raise ConversionError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
    return dtype
  found = {reader.dtype(a.source) for a in plan.assignments}
  return found.pop() if len(found) == 1 and next(iter(found)) in NP_DTYPES else "float32"


def load_params(plan: keymaps.Plan, reader, config: LlamaConfig, log: Callable[[str], None] = print) -> dict:
  """Read, convert and place every tensor; returns the nested `params` tree of CPU jax.Arrays."""
  cpu = jax.devices("cpu")[0]
  target = NP_DTYPES[config.param_dtype]
  flat = {}
  order = sorted(plan.assignments, key=lambda a: reader.sort_key(a.source)) if hasattr(reader, "sort_key") \
      else plan.assignments  # file order: sequential reads, and shards are released one after another
  for i, a in enumerate(order):
    x = reader.get(a.source)
    # Cast first (bf16 -> f32 is exact, f32 -> bf16 rounds to nearest even, as torch does), then lay out.
    x = np.ascontiguousarray(a.transform.to_ours(x.astype(target, copy=False), config))
    flat[a.target] = jax.device_put(x, cpu)
    del x
    if (i + 1) % 50 == 0:
      log(f"  {i + 1}/{len(plan.assignments)} tensors")
  if plan.tied_lm_head is not None:  # a tied model's checkpoint that still stores the output layer
    head = plan.tied_lm_head.transform.to_ours(reader.get(plan.tied_lm_head.source).astype(target), config)
    if not np.array_equal(head, np.asarray(flat["embed_tokens/embedding"]).T):
      raise ConfigMismatchError(
          f"the config ties the output layer to the embedding (tie_word_embeddings=true), but the checkpoint's "
          f"{plan.tied_lm_head.source} differs from the embedding. Set tie_word_embeddings=false "
          "(or --set tie_embeddings=false).")
  return traverse_util.unflatten_dict(flat, sep="/")


def _tokenizer(path: str | None, config: LlamaConfig):
  from telugu_jax.tokenizer import TokenizerError, check_vocab, load_tokenizer

  if path is None:
    return None
  try:
    tok = load_tokenizer(path)
  except TokenizerError:
    raise
  except Exception as e:  # e.g. a tiktoken file named tokenizer.model that sentencepiece cannot parse
    raise TokenizerError(f"cannot load the tokenizer at {path} ({type(e).__name__}: {e}); give a sentencepiece "
                         "tokenizer.model or a tokenizer.json with --tokenizer") from None
  check_vocab(tok, config.vocab_size)
  return tok


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, layout: str = "auto", key_map: str | None = None,
            tokenizer: str | None = None, dtype: str | None = "auto", compute_dtype: str = "bfloat16",
            config_file: str | None = None, preset: str | None = None, overrides: Mapping | None = None,
            overwrite: bool = False, chat_template: ChatTemplate = DEFAULT_TEMPLATE,
            log: Callable[[str], None] = print) -> str:
  """Convert a PyTorch checkpoint into a model directory at `dst`; returns its path.

  Args:
    src: a Hugging Face folder, a Meta folder or a state-dict file (see `layouts`).
    layout: "auto" (detect), "hf", "meta" or "state_dict".
    key_map: a JSON key-map file for names that are neither HF nor Meta (see `keymaps.load_key_map`).
    tokenizer: tokenizer.model / tokenizer.json (or their folder); default: one found beside the weights.
    dtype: stored parameter dtype, "auto" keeps the checkpoint's.
    compute_dtype: the activations dtype recorded in the config.
    config_file, preset, overrides: the architecture for a bare state dict, or corrections to a found one.
    chat_template: recorded in model.json for whoever fine-tunes or chats with this model; the tokenizer's
      verdict on it (and on Telugu text) is logged in one line.
  """
  src = os.path.abspath(os.fspath(src))
  layout = detect_layout(src) if layout in (None, "auto") else layout
  if layout == "peft":
    raise ConversionError(f"{src} is a PEFT adapter: pass the model it adapts with --base CKPT "
                          "(a telugu-jax model directory)")
  source: Source = open_source(src, layout, config_file=config_file)
  try:
    config = source.config
    if preset:
      try:
        config = LlamaConfig.preset(preset)
      except ValueError as e:
        raise ConversionError(str(e)) from None
    if config is None:
      raise ConversionError(f"{src} is a bare state dict: give its architecture with --config FILE "
                            "(a Hugging Face config.json, Meta params.json or telugu-jax config) or --preset NAME "
                            "(with --set FIELD=VALUE for changes)")
    config = apply_overrides(config, {"dtype": compute_dtype, **(overrides or {})})
    if key_map:
      rules, table = keymaps.load_key_map(key_map), None
    else:
      table = keymaps.TABLES.get(layout) or keymaps.guess_table(source.reader.names())
      if table is None:
        raise keymaps.KeyMismatchError(
            f"the tensor names of {src} are neither Hugging Face nor Meta names (e.g. "
            f"{sorted(source.reader.names())[:3]}). Pass --key-map FILE. " + keymaps.KEY_MAP_HELP)
      rules = table.rules
    expected = expected_shapes(config)["params"]
    plan = keymaps.make_plan(source.reader.names(), rules, expected, config, table=table,
                             layout=table.name if table else "custom")
    check_shapes(plan, source.reader, expected, "config" if source.config is not None or config_file else "preset")
    config = config.replace(param_dtype=resolve_dtype(dtype, source.reader, plan))
    tok = _tokenizer(tokenizer or source.tokenizer_dir, config)
    for note in source.notes + [f"skipped buffer {n} (holds no weights)" for n in plan.skipped]:
      log("note: " + note)
    if tok is not None:
      from telugu_jax.tokenizer_check import verdict

      log(verdict(tok, chat_template, option_prefix="--chat-"))
    if tok is None:
      log("warning: no tokenizer found beside the weights and none given (--tokenizer); the model directory "
          "will have none, and chat/training will ask for one")
    log(f"converting {len(plan.assignments)} tensors ({layout}, {config.num_params() / 1e6:.1f}M parameters, "
        f"{config.param_dtype}) -> {dst}")
    params = load_params(plan, source.reader, config, log)
  finally:
    source.reader.close()
  extra = {"converted_from": {"path": src, "layout": layout, "key_map": key_map and os.path.abspath(key_map)},
           "chat_template": chat_template.to_dict()}
  return save_model(dst, config, params=params, tokenizer=tok, extra=extra, overwrite=overwrite)
