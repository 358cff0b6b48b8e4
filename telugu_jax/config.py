"""The one config loader: a `get_config()` file plus `--config.a.b=value` overrides, for every CLI, the demo
and the tests.

    cfg = load_config("configs/lora.py", ["--config.optim.lr=1e-4", "--config.data.train=('a.jsonl',)"])
    cfg = load_config("smoke")          # a config shipped in the package (telugu_jax/configs/smoke.py)

A config file is a Python file whose `get_config()` returns an `ml_collections.ConfigDict`. The result is
locked: a key that the file does not define is an error that lists the valid keys, never a silent new
setting. Values are typed by the file: an override of a float setting may be written `3` (it becomes 3.0),
a tuple is written as a Python literal, a string needs no quotes, and `True`/`False` are the only booleans.

Why not absl's `config_flags`: it is tied to absl's global flags (one config per process, parsed in
`app.run`), prints a 50-line traceback for a typo, and the data and demo entry points, which are not absl
apps, needed a second loader. This one is a plain function; library code never calls it (it takes the typed
settings built from its result, e.g. `telugu_jax.train.settings.RunSettings.from_config`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.resources
import importlib.util
import os
from collections.abc import Sequence

import ml_collections

from telugu_jax.errors import UserError


class ConfigError(UserError):
  """A config file that cannot be loaded, or an override that does not fit it."""


def packaged_configs() -> list[str]:
  """Names of the configs shipped with the package (`load_config(NAME)` loads them from anywhere)."""
  root = importlib.resources.files("telugu_jax") / "configs"
  return sorted(p.name[:-3] for p in root.iterdir() if p.name.endswith(".py") and not p.name.startswith("_"))


def config_path(spec: str) -> str:
  """A path to an existing config file, or the name of a packaged config (`lora`, `configs/lora.py` from any
  folder when no such file exists there)."""
  if os.path.isfile(spec):
    return spec
  name = os.path.basename(spec)
  name = name[:-3] if name.endswith(".py") else name
  bare = spec in (name, name + ".py") or os.path.normpath(os.path.dirname(spec)) == "configs"
  if bare and name in packaged_configs():
    with importlib.resources.as_file(importlib.resources.files("telugu_jax") / "configs" / f"{name}.py") as p:
      return str(p)
  raise ConfigError(f"config file {spec!r} not found; pass a path to a file with get_config(), or one of the "
                    f"packaged configs: {', '.join(packaged_configs())}")


def _get_config(path: str) -> ml_collections.ConfigDict:
  module_name = "telugu_jax_config_" + os.path.basename(path)[:-3].replace("-", "_")
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"{path}: not a Python file; a config is a .py file defining get_config()")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"{path}:{e.lineno}: syntax error in the config file: {e.msg}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"{path} defines no get_config(); a config file returns its ConfigDict from get_config()")
  cfg = module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not an ml_collections.ConfigDict")
  return cfg


def _parse_value(raw: str, old, where: str):
  """`raw` (the text after `=`) as a value of the type the config file gave the setting."""
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  if isinstance(old, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"{where}={raw}: a boolean setting; write True or False")
    return value
  if isinstance(old, str):
    return raw if not isinstance(value, str) else value
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(old, tuple | list) and not isinstance(value, tuple | list):
    return (raw,)        # one path for a tuple-of-paths setting: --config.data.train=file.jsonl
  if isinstance(old, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def apply_override(cfg: ml_collections.ConfigDict, item: str) -> None:
  """Apply one `--config.a.b=value` (or `config.a.b=value`) to `cfg` in place."""
  text = item[2:] if item.startswith("--") else item
  if not text.startswith("config.") or "=" not in text:
    raise ConfigError(f"unrecognised argument {item!r}; overrides look like --config.optim.lr=1e-4")
  dotted, raw = text[len("config."):].split("=", 1)
  where = f"--config.{dotted}"
  *parents, leaf = dotted.split(".")
  node, path = cfg, []
  for name in parents:
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      raise ConfigError(f"{where}: no section {'.'.join(path + [name])!r}; valid keys here: {_keys(node)}")
    node, path = node[name], path + [name]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(f"{where}: no setting {'.'.join(path + [leaf])!r}; valid keys here: {_keys(node)}")
  old = node[leaf]
  if isinstance(old, ml_collections.ConfigDict):
    raise ConfigError(f"{where} is a section; set one of its keys: {_keys(old)}")
  value = _parse_value(raw, old, where)
  try:
    with node.unlocked():
      node[leaf] = value
  except (TypeError, ValueError, KeyError) as e:
    raise ConfigError(f"{where}={raw}: {e}; the config file has {old!r} ({type(old).__name__})") from None


def _keys(node) -> str:
  return ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "(not a section)"


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`get_config()` of the file (or packaged config) `spec` with `overrides` applied, locked."""
  cfg = _get_config(config_path(spec))
  cfg.lock()
  for item in overrides:
    apply_override(cfg, item)
  return cfg


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
  """(config spec, its overrides, every other argument) from a command line: `--config PATH`,
  `--config=PATH` and `--config.a.b=value` (also `--config.a.b value`)."""
  spec, overrides, rest = None, [], []
  args = list(argv)
  i = 0
  while i < len(args):
    a = args[i]
    if a == "--config" and i + 1 < len(args):
      spec, i = args[i + 1], i + 2
      continue
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a.startswith("--config."):
      if "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("--"):
        a, i = f"{a}={args[i + 1]}", i + 1
      overrides.append(a)
    else:
      rest.append(a)
    i += 1
  return spec, overrides, rest


def section_fields(cls, section, name: str, *, error: type[Exception] = ConfigError,
                   skip: Sequence[str] = ()) -> dict:
  """`section` (a ConfigDict or dict) as keyword arguments of the frozen dataclass `cls`, for the typed settings
  each edge builds (train, data, evaluate): a key `cls` lacks raises `error` naming it and the valid ones, lists
  become tuples, keys the config leaves out take the dataclass's default. Keys in `skip` are the caller's."""
  values = dict(section.items()) if hasattr(section, "items") else dict(section or {})
  names = {f.name for f in dataclasses.fields(cls)} - set(skip)
  if unknown := sorted(set(values) - names - set(skip)):
    raise error(f"unknown config keys {', '.join(f'{name}.{k}' for k in unknown)}; section {name!r} has "
                f"{', '.join(sorted(names))}")
  return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in values.items() if k in names}
