"""What a run optimises: a `Task` is a frozen set of functions, one per objective-dependent part of a run.

The loop (loop.py) is the same for every objective: mesh, shardings, resume, logging, checkpoints, early
stopping, export. A task supplies the rest: the model to start from, the data, how variables split into
trainable and frozen, the jitted steps' objective, the validation summary and the FLOPs for MFU. Tasks hold
no mutable state: what `load` finds (the weights, the base an adapter will point at) travels in `Start`.

Objectives are registered by name (`config.objective`) with the module that builds them, so the trainer does
not import DPO unless a DPO config asks for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax

from telugu_jax.chat_format import DEFAULT_TEMPLATE, ChatFormat, ChatTemplate
from telugu_jax.model import LlamaConfig
from telugu_jax.model.lora import split_variables
from telugu_jax.train.errors import TrainingError
from telugu_jax.train.metrics import flops_per_token
from telugu_jax.train.settings import RunSettings
from telugu_jax.train.step import make_steps


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a run starts: the model config as this run executes it, the initial weights (None: from scratch),
  the tokenizer, and the model directory an exported adapter applies to (None for full weights)."""
  model_cfg: LlamaConfig
  params: Any
  tokenizer: Any
  base_dir: str | None
  template: ChatTemplate = DEFAULT_TEMPLATE     # the chat template of this run, recorded in its model.json


def run_template(run: RunSettings, recorded: ChatTemplate, *, strict: bool = False) -> ChatTemplate:
  """The run's chat template: `config.chat` when set (not the default), else the one its start model records.
  `strict` (DPO: the model already speaks its template): a configured template that differs is an error."""
  if run.chat == DEFAULT_TEMPLATE or run.chat == recorded:
    return recorded
  if strict and recorded != DEFAULT_TEMPLATE:
    raise TrainingError(f"config.chat {run.chat.to_dict()} differs from the template the model was trained with "
                        f"{recorded.to_dict()}; leave config.chat at its defaults to use the model's")
  return run.chat


def chat_format(start: Start) -> ChatFormat:
  """`ChatFormat` of the run's tokenizer and template: a tokenizer that cannot write the template stops the run
  here, before anything is compiled, with what it loses and the overrides of a template it keeps."""
  from telugu_jax.tokenizer import TokenizerError

  try:
    return ChatFormat(start.tokenizer, start.template)
  except TokenizerError as e:
    raise TrainingError(f"chat template {start.template.to_dict()}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Datasets:
  train: Iterable                                  # an endless Grain iterator source with get/set_state
  validation: Callable[[], Iterable] | None        # a fresh one-pass validation dataset per call
  batches_per_epoch: int


@dataclasses.dataclass(frozen=True)
class Task:
  """The objective-dependent parts of a run (see the module docstring).

  load(run) -> Start
  datasets(run, start, workdir) -> Datasets
  split(variables, mode) -> (trainable, frozen)
  make_steps(model, tx, run, schedule) -> (train_step, eval_step)
  summarise(sums) -> validation metrics with `val_loss` (picks the best checkpoint, drives early stopping)
  flops_per_token(model_cfg, seq_len, mode) -> float
  export_meta: extra fields of the exported model.json
  """
  name: str
  load: Callable[[RunSettings], Start]
  datasets: Callable[[RunSettings, Start, str], Datasets]
  split: Callable[[dict, str], tuple[dict, dict]]
  make_steps: Callable[..., tuple[Callable, Callable]]
  summarise: Callable[[Mapping[str, float]], dict]
  flops_per_token: Callable[[LlamaConfig, int, str], float]
  export_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ---- SFT and pretraining ------------------------------------------------------------------------------

def sft_datasets(run: RunSettings, start: Start, workdir: str) -> Datasets:
  from telugu_jax.data import loader as L

  d = run.data
  # Unpacked batches are as wide as their longest row (rounded up); with several processes each would pick its
  # own width and the global batch would not assemble: every process pads to max_seq_len instead.
  pad = {"pad_to_multiple": d.max_seq_len} if (jax.process_count() > 1 and not d.packing) else {}
  cfg = L.LoaderConfig(max_seq_len=d.max_seq_len, batch_size=d.batch_size, packing=d.packing,
                       num_packing_bins=d.num_packing_bins, shuffle=True, seed=d.seed, num_epochs=None, **pad)
  eval_cfg = dataclasses.replace(cfg, shuffle=False, num_epochs=1)
  kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
  tokenizer = start.tokenizer
  if d.kind == "sft":
    fmt = chat_format(start)
    train = L.sft_dataset(list(d.train), fmt, cfg, rejected_path=os.path.join(workdir, "rejected.jsonl"), **kw)
    per_epoch = L.count_batches(list(d.train), fmt, cfg)
    val = (lambda: L.sft_dataset(list(d.validation), fmt, eval_cfg, **kw)) if d.validation else None
  elif d.kind == "pretrain":
    train = L.pretrain_dataset(list(d.train), tokenizer, cfg, rejected_path=os.path.join(workdir, "rejected.jsonl"),
                               **kw)
    per_epoch = L.count_pretrain_batches(list(d.train), tokenizer, cfg)
    val = (lambda: L.pretrain_dataset(list(d.validation), tokenizer, eval_cfg, **kw)) if d.validation else None
  else:
    raise TrainingError(f"data.kind={d.kind!r}; use 'sft' or 'pretrain' (or objective='dpo' with 'preference')")
  return Datasets(train=train, validation=val, batches_per_epoch=per_epoch)


def sft_summary(sums: Mapping[str, float]) -> dict:
  """Loss-token-weighted mean cross-entropy over the validation set, and its perplexity."""
  n = max(float(sums.get("tokens", 0.0)), 1.0)
  loss = float(sums.get("ce_sum", 0.0)) / n
  return {"val_loss": loss, "val_ppl": float(math.exp(min(loss, 50.0))),
          "val_accuracy": float(sums.get("correct", 0.0)) / n, "val_tokens": float(sums.get("tokens", 0.0))}


def _sft_steps(model, tx, run: RunSettings, schedule):
  t = run.train
  return make_steps(model, tx, accum=t.grad_accum, z_loss=t.z_loss, schedule=schedule, loss_chunk=t.loss_chunk)


def sft_task(run: RunSettings | None = None) -> Task:
  """SFT on conversations (`data.kind="sft"`) or pretraining on text (`"pretrain"`)."""
  from telugu_jax.train.core import load_base

  return Task(name="sft", load=load_base, datasets=sft_datasets, split=split_variables, make_steps=_sft_steps,
              summarise=sft_summary, flops_per_token=lambda cfg, seq, mode: flops_per_token(cfg, seq, mode=mode))


# ---- the registry ---------------------------------------------------------------------------------------

OBJECTIVES: dict[str, str] = {
    "sft": "telugu_jax.train.tasks:sft_task",
    "dpo": "telugu_jax.dpo.train:dpo_task",
}


def task_for(run: RunSettings) -> Task:
  """The task of `run.objective`, built by the factory the registry names (imported only when asked for)."""
  if run.objective not in OBJECTIVES:
    raise TrainingError(f"objective={run.objective!r}; choose one of {', '.join(sorted(OBJECTIVES))}")
  module, name = OBJECTIVES[run.objective].split(":")
  return getattr(importlib.import_module(module), name)(run)
