"""Text generation: one prefill over left-padded prompts, then a jitted decode loop over a fixed-size KV cache.

    gen = Generator.from_loaded(load_model("runs/demo/sft"))
    [out] = gen.generate([prompt_ids], SamplingConfig(temperature=0.7, top_p=0.9), stop_strings=("\\nuser:",))

Everything from the prefill to the last token is one `jax.jit` function; the decode loop is a
`lax.while_loop`, so a whole generation is one device program, compiled once per (batch, prompt bucket,
max_new_tokens, sampling mode) and never per token. Prompts of different lengths are left-padded to a
bucket (`prompt_bucket` doubled until it fits, so a chat's growing history does not recompile every turn); the
pads carry segment id 0, real tokens get positions from 0, so a row's result does not depend on its
neighbours. The cache has `bucket + max_new_tokens` slots.

Stop strings are text, and the ids that spell them vary with context (`\\n`,`us`,`er`,`:` or a merged
piece), so they are checked on the host, on the decoded text, through an ordered `io_callback` in the
loop body: the row tracker (`telugu_jax.rows.RowTracker`, the same one the server uses) decodes only each
step's new tokens, checks stop strings and streams text. It runs only when stop strings or streaming are
asked for; without them (benchmarks) the loop never leaves the device. Streaming holds back text that could
still turn into a stop string, and an incomplete UTF-8 byte sequence, so what is streamed always equals the
final text.

Sampling follows Hugging Face's order: repetition penalty on the raw logits, then temperature, top-k,
top-p. `temperature=0` is greedy.

LoRA: `merge_lora=True` (default) folds the adapter into the base weights once, so decoding costs the
same as the base; `merge_lora=False` applies it on the fly, so adapters of the same shapes can be
swapped in `generator.variables["lora"]` without recompiling, and `with_adapter` gives a generator per
adapter over the same base arrays (one base in memory for many adapters: the server's `--adapter`).

Shape legend: B batch, T prompt bucket, S cache slots, N new tokens, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from telugu_jax.model.cache import KVCache
from telugu_jax.model.config import LlamaConfig
from telugu_jax.model.llama import Llama
from telugu_jax.model.lora import LoraConfig, merge_lora
from telugu_jax.rows import RowSpec, RowTracker, cut_at_stop

StreamFn = Callable[[int, str], None]  # (row, new text)
# (tokens [B] int32, step, done before this step [B] bool) -> stop now [B] bool; numpy, on the host
HostHook = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 256
  temperature: float = 0.0        # 0 = greedy
  top_k: int = 0                  # 0 = off
  top_p: float = 1.0              # 1 = off
  repetition_penalty: float = 1.0  # 1 = off; HF/CTRL rule: a seen token's logit is divided (>0) or multiplied (<0)
  seed: int = 0

  def __post_init__(self):
    checks = [(self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
              (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
              (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
              (0 < self.top_p <= 1, "top_p must be in (0, 1] (1 = off)"),
              (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 = off)")]
    for ok, message in checks:
      if not ok:
        raise ValueError(f"{message}; got {self}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


@dataclasses.dataclass
class Generation:
  ids: list[int]        # new tokens, through the eos or the token that completed a stop string
  text: str             # decoded new tokens without eos, cut before the first stop string ("" without a tokenizer)
  finish_reason: str    # "eos", "stop" (a stop string) or "length" (max_new_tokens)
  step_logits: np.ndarray | None = None  # [len(ids), V] float32 raw logits of each step, when asked for


# ---- sampling (pure) ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Mode:
  """What is compiled in: switching these recompiles, changing their values does not."""

  greedy: bool
  top_k: bool
  top_p: bool
  repetition: bool


def _mode(s: SamplingConfig) -> _Mode:
  return _Mode(greedy=s.greedy, top_k=not s.greedy and s.top_k > 0, top_p=not s.greedy and s.top_p < 1.0,
               repetition=s.repetition_penalty != 1.0)


def sampling_knobs(s: SamplingConfig) -> dict:
  """The sampling values as traced scalars (changing them does not recompile)."""
  return {"temperature": jnp.float32(max(s.temperature, 1e-6)), "top_k": jnp.int32(s.top_k),
          "top_p": jnp.float32(s.top_p), "repetition_penalty": jnp.float32(s.repetition_penalty)}


def process_logits(logits_bv: jax.Array, seen_bv: jax.Array | None, knobs: dict, mode: _Mode) -> jax.Array:
  """Logits [B, V] float32 -> what is sampled from: repetition penalty, then (unless greedy) temperature,
  top-k and top-p, filtered entries set to -inf."""
  logits = logits_bv.astype(jnp.float32)
  if mode.repetition:
    p = knobs["repetition_penalty"]
    logits = jnp.where(seen_bv, jnp.where(logits < 0, logits * p, logits / p), logits)
  if mode.greedy:
    return logits
  logits = logits / knobs["temperature"]
  if mode.top_k or mode.top_p:
    # One descending sort serves both filters; thresholds are values, so ties at the cut are kept (as HF).
    sorted_desc = -jnp.sort(-logits, axis=-1)
    if mode.top_k:
      k = jnp.clip(knobs["top_k"], 1, logits.shape[-1])
      kth = jnp.take_along_axis(sorted_desc, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), axis=-1)
      logits = jnp.where(logits < kth, -jnp.inf, logits)
      sorted_desc = jnp.where(sorted_desc < kth, -jnp.inf, sorted_desc)
    if mode.top_p:
      probs = jax.nn.softmax(sorted_desc, axis=-1)
      before = jnp.cumsum(probs, axis=-1) - probs           # mass of the tokens ranked above each one
      n_keep = jnp.maximum(jnp.sum(before < knobs["top_p"], axis=-1, keepdims=True), 1)
      cut = jnp.take_along_axis(sorted_desc, n_keep - 1, axis=-1)
      logits = jnp.where(logits < cut, -jnp.inf, logits)
  return logits


def sample_next(logits_bv: jax.Array, rng: jax.Array, seen_bv: jax.Array | None, knobs: dict, mode: _Mode) -> jax.Array:
  """Next token ids [B] int32 from logits [B, V] float32 (already masked past the tokenizer's vocab)."""
  logits = process_logits(logits_bv, seen_bv, knobs, mode)
  if mode.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


# ---- host side: the row tracker (telugu_jax.rows) is called through one dispatcher -------------------------

# io_callback targets must be fixed at trace time, so the jitted loop calls one dispatcher with the
# handler's id as an operand: each generate() call registers its own RowTracker without recompiling.
_HANDLERS: dict[int, HostHook] = {}
_HANDLER_IDS = itertools.count(1)
_HANDLER_LOCK = threading.Lock()


def _dispatch(handler_id, tok_b, step, done_b):
  return _HANDLERS[int(handler_id)](np.asarray(tok_b), np.asarray(step), np.asarray(done_b))


# ---- the jitted program --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """The static part of a decode loop: a new value compiles a new program."""

  max_new_tokens: int
  mode: _Mode = _Mode(greedy=True, top_k=False, top_p=False, repetition=False)
  vocab_limit: int | None = None   # ids >= this are never sampled (padded embedding rows); None = all
  eos_id: int = -1                 # -1 = never stop early
  pad_id: int = 0
  use_host: bool = False           # call the host each step (stop strings, streaming)
  keep_logits: bool = False        # return each step's raw logits


def prefill(model: Llama, variables: dict, tokens_bt: jax.Array, lengths_b: jax.Array,
            cache_size: int) -> tuple[jax.Array, KVCache]:
  """Run the left-padded prompts [B, T] (real lengths [B]) into a fresh cache of `cache_size` slots.
  Returns the next-token logits [B, V] float32 and the cache (index T)."""
  b, t = tokens_bt.shape
  pad_b = t - lengths_b
  slot_t = jnp.arange(t)
  segment_ids = (slot_t[None, :] >= pad_b[:, None]).astype(jnp.int32)
  positions = jnp.maximum(slot_t[None, :] - pad_b[:, None], 0)
  cache = KVCache.create(model.config, b, cache_size)
  hidden, cache = model.apply(variables, tokens_bt, positions=positions, segment_ids=segment_ids, cache=cache,
                              return_hidden=True)
  return model.output_head(variables["params"], hidden[:, -1]), cache


def decode(model: Llama, variables: dict, logits_bv: jax.Array, cache: KVCache, lengths_b: jax.Array,
           seen_bv: jax.Array | None, rng: jax.Array, knobs: dict, handler_id: jax.Array, opts: DecodeOptions):
  """The decode loop from a prefilled cache: sample, record, feed back, until every row is done or
  `max_new_tokens`. Returns new tokens [B, N], their count per row [B] (through the terminator), and, with
  `keep_logits`, each step's raw logits [B, N, V]."""
  b, vocab, n = logits_bv.shape[0], model.config.vocab_size, opts.max_new_tokens
  valid_v = None if opts.vocab_limit in (None, vocab) else jnp.arange(vocab) < opts.vocab_limit
  state = dict(step=jnp.zeros((), jnp.int32), logits=logits_bv, cache=cache, seen=seen_bv,
               done=jnp.zeros((b,), bool), count=jnp.zeros((b,), jnp.int32),
               out=jnp.full((b, n), opts.pad_id, jnp.int32),
               hist=jnp.zeros((b, n, vocab), jnp.float32) if opts.keep_logits else None)

  def cond(s):
    return (s["step"] < n) & ~jnp.all(s["done"])

  def body(s):
    step = s["step"]
    logits = s["logits"] if valid_v is None else jnp.where(valid_v, s["logits"], -jnp.inf)
    tok = sample_next(logits, jax.random.fold_in(rng, step), s["seen"], knobs, opts.mode)
    tok = jnp.where(s["done"], opts.pad_id, tok)
    new = dict(s)
    new["out"] = jax.lax.dynamic_update_slice(s["out"], tok[:, None], (0, step))
    if opts.keep_logits:
      new["hist"] = jax.lax.dynamic_update_slice(s["hist"], s["logits"][:, None], (0, step, 0))
    new["count"] = jnp.where(s["done"], s["count"], step + 1)
    done = s["done"] | (tok == opts.eos_id) if opts.eos_id >= 0 else s["done"]
    if opts.use_host:
      done = done | io_callback(_dispatch, jax.ShapeDtypeStruct((b,), jnp.bool_), handler_id, tok, step, s["done"],
                                ordered=True)
    new["done"] = done
    if opts.mode.repetition:
      new["seen"] = s["seen"].at[jnp.arange(b), tok].set(True)
    logits, new["cache"] = model.apply(variables, tok[:, None], positions=(lengths_b + step)[:, None],
                                       segment_ids=jnp.ones((b, 1), jnp.int32), cache=s["cache"])
    new["logits"] = logits[:, 0]
    new["step"] = step + 1
    return new

  state = jax.lax.while_loop(cond, body, state)
  return state["out"], state["count"], state["hist"]


@functools.partial(jax.jit, static_argnames=("model", "opts"))
def _generate_device(variables, tokens_bt, lengths_b, rng, knobs, handler_id, *, model: Llama, opts: DecodeOptions):
  """Prefill + decode as one program."""
  b, t = tokens_bt.shape
  logits, cache = prefill(model, variables, tokens_bt, lengths_b, t + opts.max_new_tokens)
  seen = None
  if opts.mode.repetition:  # HF counts the prompt's tokens as seen; pads are not
    real = jnp.arange(t)[None, :] >= (t - lengths_b)[:, None]
    seen = jnp.zeros((b, model.config.vocab_size), bool).at[jnp.arange(b)[:, None], tokens_bt].max(real)
  return decode(model, variables, logits, cache, lengths_b, seen, rng, knobs, handler_id, opts)


# ---- the user-facing wrapper ---------------------------------------------------------------------------

_DEFAULT = object()


class Generator:
  """A model ready to generate: variables (LoRA merged or not), tokenizer, and the jitted program."""

  def __init__(self, config: LlamaConfig, variables: dict, *, tokenizer: Any = None,
               lora_config: LoraConfig | None = None, merge: bool = True, prompt_bucket: int = 64):
    has_lora = "lora" in variables
    if has_lora and lora_config is None:
      raise ValueError("variables hold a 'lora' collection but no lora_config was given")
    if has_lora and merge:
      variables = {"params": merge_lora(variables["params"], variables["lora"], lora_config)}
    self.config, self.tokenizer, self.prompt_bucket = config, tokenizer, prompt_bucket
    self.variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
    self.model = Llama(config, lora=lora_config if (has_lora and not merge) else None)

  def set_adapter(self, lora: dict) -> None:
    """Swap in another adapter of the same shapes (on-the-fly mode, `merge=False`); nothing recompiles."""
    if self.model.lora is None:
      raise ValueError("set_adapter needs a Generator built with merge=False and an adapter")
    old = jax.tree_util.tree_map(jnp.shape, self.variables["lora"])
    if jax.tree_util.tree_map(jnp.shape, lora) != old:
      raise ValueError("the new adapter's shapes (rank, targets) differ from the current one's")
    self.variables = {**self.variables, "lora": jax.tree_util.tree_map(jnp.asarray, lora)}

  def with_adapter(self, lora: dict, lora_config: LoraConfig) -> Generator:
    """This model's base with another LoRA adapter applied on the fly: a new Generator over the *same* base
    arrays (nothing is copied), so one base in memory serves any number of adapters. Adapters of one
    `LoraConfig` share one compiled program."""
    return Generator(self.config, {"params": self.variables["params"], "lora": lora}, tokenizer=self.tokenizer,
                     lora_config=lora_config, merge=False, prompt_bucket=self.prompt_bucket)

  @classmethod
  def from_loaded(cls, loaded, **kw) -> Generator:
    """From `telugu_jax.model.io.load_model(...)`."""
    return cls(loaded.config, loaded.variables, tokenizer=loaded.tokenizer, lora_config=loaded.lora_config, **kw)

  def bucket(self, length: int) -> int:
    """Prompt width for `length` tokens: `prompt_bucket` doubled until it fits. Doubling bounds the programs
    compiled over a growing chat history to log2(context / prompt_bucket) + 1, at most 2x prefill padding."""
    width = self.prompt_bucket
    while width < length:
      width *= 2
    return width

  def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig = SamplingConfig(), *,
               stop_strings: Sequence[str] = (), stream: StreamFn | None = None, eos_id: Any = _DEFAULT,
               pad_batch_to: int | None = None, return_logits: bool = False,
               host_hook: HostHook | None = None) -> list[Generation]:
    """Generate a continuation for each prompt (lists of token ids, bos included).

    Args:
      prompts: B prompts of any lengths >= 1.
      sampling: sampling settings; `seed` makes sampling reproducible for a given batch.
      stop_strings: generation of a row ends once its decoded text contains one (needs a tokenizer).
      stream: called as `stream(row, text)` with each new piece of final text (needs a tokenizer).
      eos_id: token that ends a row; default the tokenizer's eos; None never stops early.
      pad_batch_to: pad the batch with dummy rows to this size (one compiled program for every batch).
      return_logits: also return each step's raw logits (tests; [B, N, V] float32 stays on the device).
      host_hook: for callers that set each row's own limits (a server passes a `rows.RowTracker` with per-row
        stop strings, limits, a chat template and cancellation): called after every step with all rows (dummy
        rows too) as `hook(tokens, step, done)`, returns which rows stop now. It replaces the built-in
        tracker that `stop_strings` and `stream` set up, so give one or the other.
    """
    if not prompts:
      return []
    if eos_id is _DEFAULT:
      eos_id = None if self.tokenizer is None else self.tokenizer.eos_id
    if host_hook is not None and (stop_strings or stream is not None):
      raise ValueError("host_hook replaces stop_strings/stream: give one or the other")
    if (stop_strings or stream is not None) and self.tokenizer is None:
      raise ValueError("stop strings and streaming decode text: build the Generator with a tokenizer")
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
      raise ValueError("every prompt needs at least one token (the bos)")
    longest = max(lengths) + sampling.max_new_tokens
    if longest > self.config.max_seq_len:
      raise ValueError(
          f"a prompt of {max(lengths)} tokens plus max_new_tokens={sampling.max_new_tokens} exceeds the model's "
          f"context of {self.config.max_seq_len} tokens: shorten the prompt or lower max_new_tokens")
    bad = [int(i) for p in prompts for i in p if not 0 <= int(i) < self.config.vocab_size]
    if bad:
      raise ValueError(f"token ids {bad[:5]} are outside the model's vocabulary [0, {self.config.vocab_size})")
    n_real = len(prompts)
    batch = max(n_real, pad_batch_to or 0)
    rows = list(prompts) + [prompts[0]] * (batch - n_real)
    pad_id = 0 if self.tokenizer is None else int(self.tokenizer.pad_id)
    t = self.bucket(max(lengths))
    tokens = np.full((batch, t), pad_id, np.int32)
    for r, p in enumerate(rows):
      tokens[r, t - len(p):] = np.asarray(p, np.int32)
    lens = np.array([len(p) for p in rows], np.int32)
    knobs = sampling_knobs(sampling)
    vocab_limit = self.config.vocab_size if self.tokenizer is None else min(self.tokenizer.vocab_size,
                                                                             self.config.vocab_size)
    use_host = bool(stop_strings) or stream is not None or host_hook is not None
    tracker = None
    if host_hook is None and use_host:
      specs = [RowSpec(stops=tuple(stop_strings), on_text=None if stream is None else functools.partial(stream, r))
               for r in range(n_real)]
      tracker = RowTracker(self.tokenizer, specs, batch, eos_id=eos_id, max_steps=sampling.max_new_tokens)
    host = host_hook or tracker
    with _HANDLER_LOCK:
      handler_id = next(_HANDLER_IDS)
      _HANDLERS[handler_id] = host
    try:
      opts = DecodeOptions(max_new_tokens=sampling.max_new_tokens, mode=_mode(sampling), vocab_limit=vocab_limit,
                           eos_id=-1 if eos_id is None else int(eos_id), pad_id=pad_id, use_host=use_host,
                           keep_logits=return_logits)
      out, count, hist = _generate_device(self.variables, jnp.asarray(tokens), jnp.asarray(lens),
                                          jax.random.key(sampling.seed), knobs, jnp.int32(handler_id),
                                          model=self.model, opts=opts)
      out, count = np.asarray(out), np.asarray(count)
      hist = None if hist is None else np.asarray(hist)
    finally:
      with _HANDLER_LOCK:
        _HANDLERS.pop(handler_id, None)
    results = []
    for r in range(n_real):
      ids = out[r, :count[r]].tolist()
      if tracker is not None:
        row = tracker.rows[r]
        text, reason = row.text, row.reason or "length"
      else:
        text, hit = "", False
        if self.tokenizer is not None:
          text, hit = cut_at_stop(self.tokenizer.decode([i for i in ids if i != eos_id]), stop_strings)
        # Shorter than max_new_tokens without eos means a stop string or the host hook ended the row.
        reason = ("eos" if ids and ids[-1] == eos_id else
                  "stop" if hit or len(ids) < sampling.max_new_tokens else "length")
      results.append(Generation(ids=ids, text=text, finish_reason=reason,
                                step_logits=None if hist is None else hist[r, :count[r]]))
    return results
