"""Typed settings of the data pipeline, built once from configs/data.py at the edge (`PrepareSettings.from_config`).

The stages take these frozen dataclasses (and CleanConfig, DedupeConfig, MixConfig from their own modules),
never a ConfigDict: a setting the code reads is a field here, so a config that lacks it fails at load time
with its name instead of falling back to a default deep inside a stage.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from telugu_jax.config import section_fields

if TYPE_CHECKING:  # imported at use: the stages import this module's TranslateConfig
  from telugu_jax.data.clean import CleanConfig
  from telugu_jax.data.dedupe import DedupeConfig
  from telugu_jax.data.mix import MixConfig


def _from_section(cls, section: Any, name: str):
  return cls(**section_fields(cls, section, name, error=ValueError))


@dataclasses.dataclass(frozen=True)
class TranslateConfig:
  """configs/data.py `translate`: the backend, the endpoint (or IndicTrans2) and the stage's chunking."""
  backend: str = "openai"
  base_url: str = "http://127.0.0.1:8000/v1"
  model: str = "gpt-4o-mini"
  api_key_env: str = "OPENAI_API_KEY"
  concurrency: int = 8
  max_retries: int = 6
  timeout_s: float = 60.0
  backoff_s: float = 1.0
  src_lang: str = "eng_Latn"
  tgt_lang: str = "tel_Telu"
  cache: str = ""
  price_in_per_m: float = 0.0
  price_out_per_m: float = 0.0
  temperature: float = 0.0
  chunk: int = 64
  indictrans_model: str = "ai4bharat/indictrans2-en-indic-dist-200M"
  trust_remote_code: bool = False
  batch_size: int = 16
  max_sentence_chars: int = 400
  max_new_tokens: int = 256
  device: str = "auto"

  @classmethod
  def from_dict(cls, d: Any) -> TranslateConfig:
    return _from_section(cls, d, "translate")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """configs/data.py `synth`: how many Telugu pairs to ask the endpoint for, and the spending caps."""
  enabled: bool = False
  pairs_per_request: int = 5
  requests_per_prompt: int = 1
  max_requests: int = 200
  max_tokens: int = 2_000_000
  max_cost: float = 5.0
  temperature: float = 0.9

  @classmethod
  def from_dict(cls, d: Any) -> SynthConfig:
    return _from_section(cls, d, "synth")


@dataclasses.dataclass(frozen=True)
class SourceSettings:
  name: str
  paths: tuple[str, ...]
  format: str = "auto"
  translate: bool = False
  options: dict = dataclasses.field(default_factory=dict)   # reader options (split, fields, where, ...)

  @classmethod
  def from_dict(cls, d: Any) -> SourceSettings:
    d = dict(d.items()) if hasattr(d, "items") else dict(d)
    options = d.pop("options", None) or {}
    options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
    return dataclasses.replace(_from_section(cls, d, "source"), options=options)


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
  workdir: str
  sources: tuple[SourceSettings, ...]
  translate: TranslateConfig
  synth: SynthConfig
  clean: CleanConfig
  dedupe: DedupeConfig
  mix: MixConfig

  @classmethod
  def from_config(cls, cfg: Any) -> PrepareSettings:
    from telugu_jax.data.clean import CleanConfig
    from telugu_jax.data.dedupe import DedupeConfig
    from telugu_jax.data.mix import MixConfig

    return cls(workdir=cfg.workdir, sources=tuple(SourceSettings.from_dict(s) for s in cfg.sources),
               translate=TranslateConfig.from_dict(cfg.translate),
               synth=SynthConfig.from_dict(cfg.synth), clean=CleanConfig.from_dict(cfg.clean),
               dedupe=DedupeConfig.from_dict(cfg.dedupe), mix=MixConfig.from_dict(cfg.mix))
