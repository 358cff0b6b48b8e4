"""A model directory, and LoRA adapters for it, ready to generate: a `Generator` and the model's `ChatFormat`.

    generator, fmt = load_chat("runs/demo/sft")                        # REPL, file mode, evaluation
    base, fmt, adapters = load_base_and_adapters("ckpt/base", [("a", "runs/a/model"), ("b", "runs/b/model")])
    gens = answer_batch(generator, [fmt.encode_prompt(turns) for turns in convs], sampling, batch_size=8)

Many adapters over one base (the server's `--adapter NAME=DIR`): the base is loaded once and each adapter
becomes a `Generator` that applies it on the fly (`Generator.with_adapter`) over the same base arrays, so
memory holds one base whatever the number of adapters (merging would copy the base once per adapter).

Many prompts (`answer_batch`): sorted by length, in padded batches of one size; chat file mode, evaluation
and DPO sampling all go through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from telugu_jax.chat_format import ChatFormat
from telugu_jax.errors import UserError
from telugu_jax.generate import Generation, Generator, SamplingConfig
from telugu_jax.model.io import load_model
from telugu_jax.tokenizer import TokenizerError

_ARCH_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim")


class ChatError(UserError, ValueError):
  """A checkpoint, adapter or input the chat cannot use; the message says what to do."""


def check_adapter(loaded, adapter_dir: str):
  """(lora tree, LoraConfig) of an adapter directory, after checking it fits the base in `loaded`."""
  import jax

  from telugu_jax.model import io as model_io
  from telugu_jax.model.config import LlamaConfig
  from telugu_jax.model.llama import Llama

  try:
    lora, lora_config, meta = model_io.load_adapter(adapter_dir)
  except model_io.ModelDirError as e:
    raise ChatError(str(e)) from None
  arch = LlamaConfig.from_dict(meta["model"])
  diff = [f for f in _ARCH_FIELDS if getattr(arch, f) != getattr(loaded.config, f)]
  if diff:
    raise ChatError(f"the adapter {adapter_dir} was trained for another base: {', '.join(diff)} differ from "
                    f"{loaded.path}. Pass the --checkpoint it was trained on.")
  want = jax.eval_shape(Llama(loaded.config, lora=lora_config).init_variables, jax.random.key(0))["lora"]
  shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), lora)
  if shapes != jax.tree_util.tree_map(lambda x: tuple(x.shape), want):
    raise ChatError(f"the adapter in {adapter_dir} does not match its own config (rank/targets): re-export it")
  return lora, lora_config


def _attach_adapter(loaded, adapter_dir: str) -> None:
  """Put the `lora` tree of an adapter directory into `loaded`, after checking it fits the base."""
  lora, lora_config = check_adapter(loaded, adapter_dir)
  if "lora" in loaded.variables:
    print(f"note: --adapter {adapter_dir} replaces the adapter stored with {loaded.path}", file=sys.stderr)
  loaded.variables = {**loaded.variables, "lora": lora}
  loaded.lora_config = lora_config
  from telugu_jax.model import io as model_io

  if template := model_io.read_meta(adapter_dir).get("chat_template"):   # the adapter was trained with it
    loaded.meta = {**loaded.meta, "chat_template": template}


def _chat_format(loaded, checkpoint: str) -> ChatFormat:
  try:
    template = loaded.chat_template
  except TokenizerError as e:
    raise ChatError(f"{checkpoint}/model.json: {e}") from None
  return ChatFormat(loaded.tokenizer, template)


def _load_with_tokenizer(checkpoint: str):
  loaded = load_model(checkpoint)
  if loaded.tokenizer is None:
    raise ChatError(
        f"{checkpoint} has no tokenizer (no tokenizer/ in it or in its base): chat needs the tokenizer the "
        "model was trained with. Save it into the model directory (save_model(..., tokenizer=tok)) or convert "
        "the checkpoint again with its tokenizer.")
  return loaded


def load_chat(checkpoint: str, adapter: str | None = None, *, merge: bool = True) -> tuple[Generator, ChatFormat]:
  """The generator and chat format of a model directory (and optional adapter directory).

  Raises `ChatError` (or `ModelDirError`/`TokenizerError`) with a message that says what to do.
  """
  loaded = _load_with_tokenizer(checkpoint)
  if adapter is not None:
    _attach_adapter(loaded, adapter)
  fmt = _chat_format(loaded, checkpoint)
  return Generator.from_loaded(loaded, merge=merge), fmt


def load_base_and_adapters(checkpoint: str, adapters: Sequence[tuple[str, str]]
                           ) -> tuple[Generator, ChatFormat, dict[str, Generator]]:
  """The checkpoint's generator and format, and a generator per (name, adapter directory), all over one
  copy of the base weights. The checkpoint's own adapter (an adapter directory) is applied on the fly too."""
  loaded = _load_with_tokenizer(checkpoint)
  fmt = _chat_format(loaded, checkpoint)
  own = Generator.from_loaded(loaded, merge=False)
  base = own if own.model.lora is None else Generator(loaded.config, {"params": own.variables["params"]},
                                                       tokenizer=loaded.tokenizer, prompt_bucket=own.prompt_bucket)
  out = {}
  for name, adapter_dir in adapters:
    lora, lora_config = check_adapter(loaded, adapter_dir)
    out[name] = base.with_adapter(lora, lora_config)
  return own, fmt, out


def answer_batch(generator: Generator, prompts: Sequence[Sequence[int]],
                 sampling: SamplingConfig | Callable[[int], SamplingConfig], *, stop_strings: Sequence[str] = (),
                 batch_size: int = 8, sort: bool = True, on_batch: Callable[[int], None] | None = None
                 ) -> list[Generation]:
  """One `Generation` per prompt (token ids), in the prompts' order: the one batch loop of chat file mode,
  evaluation and DPO sampling.

  Prompts are sorted by length (`sort=False` keeps their order, e.g. k samples of one prompt side by side),
  so a batch shares a prompt bucket and pads little, and go `batch_size` at a time, each batch padded to
  `batch_size` rows: one compiled program serves every batch of a bucket. `sampling` may be a function of
  the batch's first row (a seed per batch); `on_batch(n)` is called after each batch of n prompts.
  """
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
  out: list[Generation | None] = [None] * len(prompts)
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    config = sampling(start) if callable(sampling) else sampling
    gens = generator.generate([prompts[i] for i in rows], config, stop_strings=stop_strings, pad_batch_to=batch_size)
    for i, gen in zip(rows, gens, strict=True):
      out[i] = gen
    if on_batch is not None:
      on_batch(len(rows))
  return out
