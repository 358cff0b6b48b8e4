"""Typed settings of a training run, built once from a config (`RunSettings.from_config`) at the edge.

Library code takes these frozen dataclasses, never a ConfigDict: a missing or misspelt key fails here, in one
place, with the key's name, instead of as an AttributeError (or a silent default from `.get`) deep inside
the loop. Each dataclass mirrors one section of configs/lora.py; the sections' comments there say what each
setting does.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatTemplate
from telugu_jax.config import section_fields
from telugu_jax.model.lora import LoraConfig
from telugu_jax.train.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class OptimSettings:
  name: str = "adamw"
  lr: float = 2e-4
  warmup_steps: int = 100
  end_lr_ratio: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: float = 1.0
  decay_embeddings: bool = False


@dataclasses.dataclass(frozen=True)
class DataSettings:
  kind: str = "sft"                    # "sft" | "pretrain" | "preference"
  train: tuple[str, ...] = ()
  validation: tuple[str, ...] = ()
  max_seq_len: int = 1024
  batch_size: int = 32
  packing: bool = True
  num_packing_bins: int = 16
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  epochs: float = 3.0
  max_steps: int = -1
  grad_accum: int = 1
  dtype: str = "bfloat16"
  frozen_dtype: str = "bfloat16"
  remat: bool = False
  z_loss: float = 0.0
  attention: str = "auto"
  attention_block: int = -1           # -1: auto (query blocks on a CPU), 0: one pass, N: blocks of N
  loss_chunk: int = 0
  seed: int = 0
  log_every: int = 10
  eval_every: int = 200
  save_every: int = 200
  keep_latest: int = 2
  keep_best: int = 1
  patience: int = 0
  min_delta: float = 0.0
  async_checkpoint: bool = True
  peak_tflops: float = 0.0
  sample_every: int = 0
  sample_prompts: tuple[str, ...] = ()
  export: str = "best"                 # "best": the best checkpoint by validation loss | "last": the final state

  def __post_init__(self):
    if self.export not in ("best", "last"):
      raise TrainingError(f"train.export={self.export!r}; choose 'best' or 'last'")
    if self.grad_accum < 1:
      raise TrainingError(f"train.grad_accum={self.grad_accum}; it must be >= 1")


@dataclasses.dataclass(frozen=True)
class MeshSettings:
  shape: tuple[int, ...] = (1, -1, 1)  # (data, fsdp, tensor)
  devices: int = 0                     # the first N devices (0: all)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  preset: str = "300m"                 # only used when training from scratch (no base)
  overrides: tuple[tuple[str, Any], ...] = ()   # LlamaConfig fields for a from-scratch model


@dataclasses.dataclass(frozen=True)
class DPOSettings:
  beta: float = 0.1
  loss_type: str = "sigmoid"
  label_smoothing: float = 0.0
  precompute_reference: bool = False
  over_long: str = "reject"
  pad_to_multiple: int = 0


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Everything a run reads. `config_json` is the config as written (for WORKDIR/config.json)."""
  workdir: str
  base: str
  tokenizer: str
  mode: str                            # "lora" | "full"
  resume: bool
  objective: str                       # a key of telugu_jax.train.tasks.OBJECTIVES
  model: ModelSettings
  lora: LoraConfig | None              # None for full fine-tuning
  data: DataSettings
  optim: OptimSettings
  train: TrainSettings
  mesh: MeshSettings
  dpo: DPOSettings | None = None
  chat: ChatTemplate = DEFAULT_TEMPLATE
  config_json: str = "{}"

  def __post_init__(self):
    if self.mode not in ("lora", "full"):
      raise TrainingError(f"mode={self.mode!r}; choose 'lora' or 'full'")

  @classmethod
  def from_config(cls, cfg) -> RunSettings:
    """The typed settings of a ConfigDict made by `telugu_jax.config.load_config`."""
    sections = set(cfg.keys())
    known = {"workdir", "base", "tokenizer", "mode", "resume", "objective", "model", "lora", "data", "optim",
             "train", "mesh", "dpo", "chat"}
    if sections - known:
      raise TrainingError(f"unknown config keys {sorted(sections - known)}; a training config has {sorted(known)}")
    mode = cfg.mode
    try:
      lora = LoraConfig(**_fields(LoraConfig, cfg.lora, "lora")) if mode == "lora" else None
    except ValueError as e:
      raise TrainingError(f"lora: {e}") from None
    model = dict(cfg.model)
    overrides = tuple(sorted(dict(model.pop("overrides", {}) or {}).items()))
    return cls(
        workdir=cfg.workdir, base=cfg.base, tokenizer=cfg.tokenizer, mode=mode, resume=cfg.resume,
        objective=cfg.objective if "objective" in cfg else "sft",
        model=ModelSettings(overrides=overrides, **_fields(ModelSettings, model, "model", skip=("overrides",))),
        lora=lora,
        data=DataSettings(**_fields(DataSettings, cfg.data, "data")),
        optim=OptimSettings(**_fields(OptimSettings, cfg.optim, "optim")),
        train=TrainSettings(**_fields(TrainSettings, cfg.train, "train")),
        mesh=MeshSettings(**_fields(MeshSettings, cfg.mesh, "mesh")),
        dpo=DPOSettings(**_fields(DPOSettings, cfg.dpo, "dpo")) if "dpo" in cfg else None,
        chat=_template(cfg.chat) if "chat" in cfg else DEFAULT_TEMPLATE,
        config_json=cfg.to_json_best_effort() if hasattr(cfg, "to_json_best_effort") else json.dumps(cfg))

  def replace(self, **changes) -> RunSettings:
    return dataclasses.replace(self, **changes)

  def config_dict(self) -> dict:
    return json.loads(self.config_json)


def _template(section) -> ChatTemplate:
  from telugu_jax.tokenizer import TokenizerError

  try:
    return ChatTemplate.from_dict(_fields(ChatTemplate, section, "chat"))
  except TokenizerError as e:
    raise TrainingError(str(e)) from None


def _fields(cls, section, name: str, skip: tuple[str, ...] = ()) -> dict:
  return section_fields(cls, section, name, error=TrainingError, skip=skip)
