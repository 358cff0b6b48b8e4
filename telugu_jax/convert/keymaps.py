"""Name maps between PyTorch checkpoints and our `params` tree, one table per source layout.

A table row is (checkpoint name template, our path template, transform); `{i}` stands for a layer
index. The same table runs forward (import: checkpoint name -> our path) and in reverse (export: our
path -> checkpoint name), so the two directions cannot drift apart. A user's key-map file adds rows
for names that are neither Hugging Face nor Meta (regex -> our path).

Transforms are small numpy functions. PyTorch `nn.Linear` stores `[out, in]`, our kernels are
`[in, out]` (transpose). Meta checkpoints store q/k rows in interleaved rotary order; `meta_q`/`meta_k`
permute them once into Hugging Face's rotate-half order, so the model has a single RoPE convention.

`make_plan` matches names without loading a tensor, and raises an error a user can act on for every
name that has no place, every weight that has no source (with the closest name) and every layer-count
disagreement between the config and the checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from telugu_jax.convert.errors import ConfigMismatchError, ConversionError, KeyMismatchError
from telugu_jax.model.config import LlamaConfig

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
MAX_LISTED = 12  # names listed in an error message before "... and N more"


# ---- transforms ----------------------------------------------------------------------------------

def meta_to_hf_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Rows of a Meta q/k weight `[n_heads * H, in]` from interleaved (x0, y0, x1, y1, ...) to HF's
  rotate-half order (x0, x1, ..., y0, y1, ...) within each head."""
  rows, cols = w.shape
  return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_to_meta_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
  """The inverse of `meta_to_hf_rotary`."""
  rows, cols = w.shape
  return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


@dataclasses.dataclass(frozen=True)
class Transform:
  """`to_ours` maps a checkpoint tensor to our layout, `to_torch` maps it back; `flips` says whether the
  2-D shape is reversed (so shapes can be checked before anything is loaded)."""

  name: str
  to_ours: Callable[[np.ndarray, LlamaConfig], np.ndarray]
  to_torch: Callable[[np.ndarray, LlamaConfig], np.ndarray]
  flips: bool = False

  def our_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if self.flips else tuple(shape)


TRANSFORMS = {t.name: t for t in (
    Transform("identity", lambda x, c: x, lambda x, c: x),
    Transform("transpose", lambda x, c: x.T, lambda x, c: x.T, flips=True),
    Transform("meta_q", lambda x, c: meta_to_hf_rotary(x, c.n_heads).T,
              lambda x, c: hf_to_meta_rotary(x.T, c.n_heads), flips=True),
    Transform("meta_k", lambda x, c: meta_to_hf_rotary(x, c.n_kv_heads).T,
              lambda x, c: hf_to_meta_rotary(x.T, c.n_kv_heads), flips=True),
)}


# ---- rules ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
  """`pattern` full-matches a checkpoint name; `target` (with `\\1` groups) is our path, or None for a
  known buffer that holds no weights (e.g. a cached rotary `inv_freq`)."""

  pattern: re.Pattern
  target: str | None
  transform: Transform

  @classmethod
  def make(cls, pattern: str, target: str | None, transform: str | None = None) -> Rule:
    if transform is None:  # a PyTorch Linear weight is [out, in]: our kernels and lm_head need a transpose
      transform = "transpose" if target and (target.endswith("/kernel") or target == "lm_head") else "identity"
    if transform not in TRANSFORMS:
      raise ConversionError(f"unknown transform {transform!r} in key map; choose one of {sorted(TRANSFORMS)}")
    try:
      compiled = re.compile(pattern)
    except re.error as e:
      raise ConversionError(f"key map pattern {pattern!r} is not a valid regex: {e}") from None
    return cls(compiled, target, TRANSFORMS[transform])


def _template_regex(template: str) -> str:
  return r"(\d+)".join(re.escape(part) for part in template.split("{i}"))


@dataclasses.dataclass(frozen=True)
class Table:
  """A two-way name map: rows of (checkpoint template, our template, transform name)."""

  name: str
  rows: tuple[tuple[str, str, str], ...]
  ignored: tuple[str, ...] = ()  # regexes of buffers that carry no weights

  @property
  def rules(self) -> list[Rule]:
    rules = [Rule.make(_template_regex(src), ours.replace("{i}", r"\1"), t) for src, ours, t in self.rows]
    return rules + [Rule.make(p, None) for p in self.ignored]

  def source_name(self, path: str) -> str | None:
    """Our path -> the checkpoint name this table gives it (for export and for error messages)."""
    for src, ours, _ in self.rows:
      if m := re.fullmatch(_template_regex(ours), path):
        return m.expand(src.replace("{i}", r"\1"))
    return None

  def transform(self, path: str) -> Transform:
    for _, ours, t in self.rows:
      if re.fullmatch(_template_regex(ours), path):
        return TRANSFORMS[t]
    raise KeyError(path)


HF = Table("hf", (
    ("model.embed_tokens.weight", "embed_tokens/embedding", "identity"),
    ("model.norm.weight", "norm/scale", "identity"),
    ("lm_head.weight", "lm_head", "transpose"),
    ("model.layers.{i}.input_layernorm.weight", "layers_{i}/input_layernorm/scale", "identity"),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers_{i}/post_attention_layernorm/scale", "identity"),
    *((f"model.layers.{{i}}.self_attn.{p}.weight", f"layers_{{i}}/self_attn/{p}/kernel", "transpose") for p in ATTN),
    *((f"model.layers.{{i}}.mlp.{p}.weight", f"layers_{{i}}/mlp/{p}/kernel", "transpose") for p in MLP),
), ignored=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",))

META = Table("meta", (
    ("tok_embeddings.weight", "embed_tokens/embedding", "identity"),
    ("norm.weight", "norm/scale", "identity"),
    ("output.weight", "lm_head", "transpose"),
    ("layers.{i}.attention_norm.weight", "layers_{i}/input_layernorm/scale", "identity"),
    ("layers.{i}.ffn_norm.weight", "layers_{i}/post_attention_layernorm/scale", "identity"),
    ("layers.{i}.attention.wq.weight", "layers_{i}/self_attn/q_proj/kernel", "meta_q"),
    ("layers.{i}.attention.wk.weight", "layers_{i}/self_attn/k_proj/kernel", "meta_k"),
    ("layers.{i}.attention.wv.weight", "layers_{i}/self_attn/v_proj/kernel", "transpose"),
    ("layers.{i}.attention.wo.weight", "layers_{i}/self_attn/o_proj/kernel", "transpose"),
    ("layers.{i}.feed_forward.w1.weight", "layers_{i}/mlp/gate_proj/kernel", "transpose"),
    ("layers.{i}.feed_forward.w2.weight", "layers_{i}/mlp/down_proj/kernel", "transpose"),
    ("layers.{i}.feed_forward.w3.weight", "layers_{i}/mlp/up_proj/kernel", "transpose"),
), ignored=(r"rope\.freqs",))

TABLES = {"hf": HF, "meta": META}

KEY_MAP_HELP = (
    "A key map is a JSON file mapping checkpoint-name regexes to our parameter paths, e.g. "
    '{"blocks\\\\.(\\\\d+)\\\\.attn\\\\.q\\\\.weight": "layers_\\\\1/self_attn/q_proj/kernel", '
    '"tok\\\\.weight": "embed_tokens/embedding", "blocks\\\\.\\\\d+\\\\.attn\\\\.mask": null}; '
    "null skips a buffer that holds no weights; a list [regex, path, transform] picks the transform "
    f"({', '.join(sorted(TRANSFORMS))}; default: transpose for */kernel and lm_head, else identity). "
    "Our paths: embed_tokens/embedding, norm/scale, lm_head, layers_N/{input_layernorm,post_attention_layernorm}"
    "/scale, layers_N/self_attn/{q,k,v,o}_proj/kernel, layers_N/mlp/{gate,up,down}_proj/kernel.")


def load_key_map(path: str | os.PathLike) -> list[Rule]:
  """Rules from a key-map JSON file: `{regex: path|null}`, or a list of `[regex, path|null, transform?]`
  (optionally under a top-level `"rules"` key)."""
  try:
    with open(path) as f:
      spec = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConversionError(f"cannot read key map {path}: {e}. {KEY_MAP_HELP}") from None
  if isinstance(spec, Mapping) and "rules" in spec:
    spec = spec["rules"]
  if isinstance(spec, Mapping):
    return [Rule.make(k, v) for k, v in spec.items()]
  if isinstance(spec, list) and all(isinstance(r, list) and 2 <= len(r) <= 3 for r in spec):
    return [Rule.make(*r) for r in spec]
  raise ConversionError(f"key map {path} has an unknown shape. {KEY_MAP_HELP}")


# ---- planning ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Assignment:
  source: str          # checkpoint name
  target: str          # our path, e.g. "layers_0/self_attn/q_proj/kernel"
  transform: Transform


@dataclasses.dataclass
class Plan:
  assignments: list[Assignment]
  tied_lm_head: Assignment | None = None  # an lm_head present in a tied model: must equal the embedding
  skipped: list[str] = dataclasses.field(default_factory=list)


def _listed(items: list[str]) -> str:
  shown = "\n".join("    " + s for s in items[:MAX_LISTED])
  more = f"\n    ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
  return shown + more


def _closest(name: str, candidates: Iterable[str]) -> str:
  found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
  return f"; closest: {found[0]!r}" if found else ""


def _layers(paths: Iterable[str]) -> set[int]:
  return {int(m.group(1)) for p in paths if (m := re.match(r"layers_(\d+)/", p))}


def make_plan(names: Iterable[str], rules: Sequence[Rule], expected: Mapping[str, tuple], config: LlamaConfig,
              *, table: Table | None = None, layout: str = "") -> Plan:
  """Match checkpoint names to our paths (nothing is loaded).

  Args:
    names: the checkpoint's tensor names.
    rules: tried in order; the first full match wins.
    expected: our path -> shape, for every leaf of the `params` tree.
    config: the architecture (for layer-count and tied-embedding checks).
    table: the built-in table, if any, to name the checkpoint key a missing weight was looked for under.
    layout: named in messages.
  Raises:
    ConfigMismatchError: the checkpoint has another number of layers than the config.
    KeyMismatchError: names without a place, weights without a source (each with its closest match).
  """
  names = sorted(names)
  plan, assigned, unplaced = Plan([]), {}, []
  for name in names:
    rule = next((r for r in rules if r.pattern.fullmatch(name)), None)
    if rule is None:
      unplaced.append((name, None))
      continue
    if rule.target is None:
      plan.skipped.append(name)
      continue
    target = rule.pattern.fullmatch(name).expand(rule.target)
    if target == "lm_head" and config.tie_embeddings and "lm_head" not in expected:
      plan.tied_lm_head = Assignment(name, target, rule.transform)
    elif target not in expected:
      unplaced.append((name, target))
    elif target in assigned:
      raise KeyMismatchError(f"two checkpoint tensors map to {target}: {assigned[target].source!r} and {name!r}; "
                             "fix the key map so each weight has one source")
    else:
      assigned[target] = Assignment(name, target, rule.transform)
  missing = [p for p in expected if p not in assigned]

  ckpt_layers = _layers(assigned) | _layers(t for _, t in unplaced if t)
  if ckpt_layers and ckpt_layers != set(range(config.n_layers)):
    raise ConfigMismatchError(
        f"the config and the weights disagree on the number of layers: the config says {config.n_layers} "
        f"(num_hidden_layers / n_layers), the checkpoint holds layers {min(ckpt_layers)}..{max(ckpt_layers)} "
        f"({len(ckpt_layers)} distinct). Fix the config (or pass --set n_layers=N).")
  if "lm_head" in missing and not any(t == "lm_head" for _, t in unplaced) and len(missing) == 1:
    raise ConfigMismatchError(
        "the config says the output layer is separate (tie_word_embeddings=false), but the checkpoint has no "
        "output weight (lm_head.weight / output.weight). If the model shares it with the input embedding, set "
        "tie_word_embeddings=true (or pass --set tie_embeddings=true).")
  if missing or unplaced:
    unplaced_names = [n for n, _ in unplaced]
    lines = [f"the checkpoint's tensor names do not match the model ({layout or 'custom'} layout)."]
    if missing:
      items = []
      for path in missing:
        src = table.source_name(path) if table else None
        looked = f" (looked for {src!r}{_closest(src, unplaced_names)})" if src else _closest(path, unplaced_names)
        items.append(path + looked)
      lines.append(f"  {len(missing)} model weight(s) have no source in the checkpoint:\n" + _listed(items))
    if unplaced:
      items = []
      for name, target in unplaced:
        if target:
          items.append(f"{name} -> {target}, which the model does not have{_closest(target, expected)}")
        else:
          known = [table.source_name(p) for p in expected] if table else list(expected)
          items.append(name + _closest(name, [k for k in known if k]))
      lines.append(f"  {len(unplaced)} checkpoint tensor(s) have no place in the model:\n" + _listed(items))
    lines.append("Fix the names, or pass --key-map FILE. " + KEY_MAP_HELP)
    raise KeyMismatchError("\n".join(lines))
  plan.assignments = [assigned[p] for p in expected]
  return plan


def guess_table(names: Iterable[str]) -> Table | None:
  """The built-in table that places the most names (None when neither places any)."""
  names = list(names)
  scores = {t: sum(any(r.pattern.fullmatch(n) for r in t.rules) for n in names) for t in TABLES.values()}
  best = max(scores, key=scores.get)
  return best if scores[best] else None
