"""DPO on the shared training loop: `python -m telugu_jax.train --config configs/dpo.py`.

`dpo_task(run)` is the DPO `Task` of the shared loop (`train_and_evaluate(run)` picks it for
`objective="dpo"`): mesh, shardings, resume, logging,
checkpoints and early stopping are the SFT loop's; this module supplies what differs.

- Start: `config.base` is the SFT model (an adapter directory, or full weights). An SFT adapter is merged
  into its base once (`merge_lora`); the merged weights are the frozen base of the DPO run and its
  reference, and are written to WORKDIR/sft_merged so the exported DPO adapter has a base to point to.
- LoRA (`mode="lora"`): a fresh adapter (B = 0) trains; the reference is the same model with the adapter
  switched off. Full fine-tuning (`mode="full"`): every weight trains against a frozen copy, or against
  reference log-probs computed once before training (`dpo.precompute_reference`, which holds no copy).
- Data: preference pairs (`python -m telugu_jax.dpo read` output), rejected/shortened pairs listed in
  WORKDIR/rejected.jsonl. Validation reports DPO loss, reward accuracy/margin and KL on held-out pairs,
  and `val_loss` (the DPO loss) picks the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np

from telugu_jax.chat_format import ChatTemplate
from telugu_jax.data.loader import DataError
from telugu_jax.data.stage import json_line
from telugu_jax.dpo.data import PairCorpus, PairLoaderConfig, batches_per_epoch, pair_corpus, pair_dataset
from telugu_jax.dpo.loss import sequence_logps
from telugu_jax.dpo.objective import DPOConfig, dpo_objective, summarise_eval
from telugu_jax.model import Llama
from telugu_jax.model.io import is_model_dir, load_model, resolve_model_dir, save_model
from telugu_jax.model.lora import merge_lora, split_variables
from telugu_jax.tokenizer import TokenizerError, check_vocab, load_tokenizer
from telugu_jax.train.core import with_train_settings
from telugu_jax.train.errors import TrainingError
from telugu_jax.train.loop import RunResult, train_and_evaluate
from telugu_jax.train.metrics import flops_per_token
from telugu_jax.train.settings import RunSettings
from telugu_jax.train.step import make_steps
from telugu_jax.train.tasks import Datasets, Start, Task, chat_format, run_template


def dpo_config(run: RunSettings) -> DPOConfig:
  d = run.dpo
  if d is None:
    raise TrainingError("objective='dpo' needs a dpo section (configs/dpo.py has one)")
  if d.precompute_reference:
    reference = "precomputed"
  else:
    reference = "adapter_off" if run.mode == "lora" else "copy"
  try:
    return DPOConfig(beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, reference=reference)
  except ValueError as e:
    raise TrainingError(str(e)) from None


def _write_rejected(path: str, rejections: list[dict]) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for e in rejections:
      f.write(json_line(e))
  os.replace(path + ".tmp", path)


def reference_logps(model_cfg, params, corpus: PairCorpus, pad_id: int, *, batch_size: int, max_seq_len: int
                    ) -> np.ndarray:
  """[n, 2] float32 summed answer log-probs of every pair under `params` (the reference), in corpus order."""
  model = Llama(model_cfg)
  cfg = PairLoaderConfig(max_seq_len=max_seq_len, batch_size=batch_size, shuffle=False, num_epochs=1)

  @jax.jit
  def logps(p, batch):
    flat = {k: batch[k].reshape(-1, batch[k].shape[-1]) for k in ("inputs", "targets", "loss_mask", "segment_ids",
                                                                  "positions")}
    logits = model.apply({"params": p}, flat["inputs"], positions=flat["positions"], segment_ids=flat["segment_ids"])
    return sequence_logps(logits, flat["targets"], flat["loss_mask"])[0].reshape(-1, 2)

  out = [np.asarray(logps(params, batch)) for batch in pair_dataset(corpus, cfg, pad_id)]
  return np.concatenate(out)[: len(corpus)].astype(np.float32)


def load_sft(run: RunSettings) -> Start:
  """The SFT model DPO starts from. An SFT adapter is merged into its base once: the merged weights are the
  frozen base and the reference (LoRA; written to WORKDIR/sft_merged for the exported adapter to point at),
  or the start of every weight (full fine-tuning, which exports full weights and needs no base)."""
  if not run.base or not is_model_dir(resolve_model_dir(run.base)):
    raise TrainingError(
        f"SFT model {run.base!r} not found: DPO starts from an SFT model. Train one with "
        "`python -m telugu_jax.train --config configs/lora.py` and pass --config.base=runs/lora")
  sft = load_model(run.base, with_tokenizer=not run.tokenizer)
  tokenizer = load_tokenizer(run.tokenizer) if run.tokenizer else sft.tokenizer
  if tokenizer is None:
    raise TrainingError(f"no tokenizer: {run.base} has no tokenizer/ folder; set config.tokenizer")
  check_vocab(tokenizer, sft.config.vocab_size)
  try:   # the template the SFT model was trained with (model.json), unless the config names the same one
    template = run_template(run, ChatTemplate.from_dict(sft.meta.get("chat_template")), strict=True)
  except TokenizerError as e:
    raise TrainingError(f"{run.base}/model.json: {e}") from None
  params = sft.variables["params"]
  base_dir = resolve_model_dir(run.base)
  if "lora" in sft.variables:
    params = jax.tree_util.tree_map(np.asarray, merge_lora(params, sft.variables["lora"], sft.lora_config))
    base_dir = os.path.join(os.path.abspath(run.workdir), "sft_merged")
    if run.mode == "lora" and jax.process_index() == 0 and not is_model_dir(base_dir):
      save_model(base_dir, sft.config, params=params, tokenizer=tokenizer,
                 extra={"merged_from": sft.path, "chat_template": template.to_dict()})
  return Start(model_cfg=with_train_settings(sft.config, run), params=params, tokenizer=tokenizer,
               base_dir=base_dir if run.mode == "lora" else None, template=template)


def dpo_datasets(dpo: DPOConfig, run: RunSettings, start: Start, workdir: str) -> Datasets:
  d = run.data
  if d.kind != "preference":
    raise TrainingError(f"data.kind={d.kind!r}; DPO reads preference pairs (data.kind='preference')")
  fmt = chat_format(start)
  shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
  try:
    train = pair_corpus(list(d.train), fmt, d.max_seq_len, run.dpo.over_long)
    val = pair_corpus(list(d.validation), fmt, d.max_seq_len, run.dpo.over_long) if d.validation else None
  except DataError as e:
    if not e.rejections:
      raise TrainingError(str(e)) from None
    path = os.path.join(workdir, "rejected.jsonl")
    if jax.process_index() == 0:
      _write_rejected(path, e.rejections)
    raise TrainingError(f"{e}; each pair and why: {path}") from None
  except (FileNotFoundError, ValueError) as e:
    raise TrainingError(str(e)) from None
  if jax.process_index() == 0:
    _write_rejected(os.path.join(workdir, "rejected.jsonl"), train.rejections)
  pad_id = start.tokenizer.pad_id
  if dpo.reference == "precomputed":
    ref = functools.partial(reference_logps, start.model_cfg, start.params, pad_id=pad_id,
                            batch_size=d.batch_size, max_seq_len=d.max_seq_len)
    train = dataclasses.replace(train, ref_logps=ref(train))   # a copy: the cached corpus stays as it was
    val = dataclasses.replace(val, ref_logps=ref(val)) if val is not None else None
  cfg = PairLoaderConfig(max_seq_len=d.max_seq_len, batch_size=d.batch_size, shuffle=True, seed=d.seed,
                         num_epochs=None, pad_to_multiple=run.dpo.pad_to_multiple)
  eval_cfg = dataclasses.replace(cfg, shuffle=False, num_epochs=1)
  return Datasets(train=pair_dataset(train, cfg, pad_id, **shard),
                  validation=(lambda: pair_dataset(val, eval_cfg, pad_id, **shard)) if val is not None else None,
                  batches_per_epoch=batches_per_epoch(train, d.batch_size))


def dpo_split(dpo: DPOConfig, variables: dict, mode: str) -> tuple[dict, dict]:
  trainable, frozen = split_variables(variables, mode)
  if dpo.reference == "copy":
    frozen = {**frozen, "reference": variables["params"]}
  return trainable, frozen


def dpo_steps(dpo: DPOConfig, model, tx, run: RunSettings, schedule):
  if run.train.z_loss or run.train.loss_chunk:
    raise TrainingError("train.z_loss and train.loss_chunk apply to cross-entropy training; set them to 0 for DPO")
  return make_steps(model, tx, accum=run.train.grad_accum, schedule=schedule, objective=dpo_objective(model, dpo))


def dpo_flops(dpo: DPOConfig, model_cfg, seq_len: int, mode: str) -> float:
  # The policy's forward + backward, and a forward of the reference (2 N per token) unless precomputed.
  ref = 0.0 if dpo.reference == "precomputed" else flops_per_token(model_cfg, seq_len, "full") / 3
  return flops_per_token(model_cfg, seq_len, mode) + ref


def dpo_task(run: RunSettings) -> Task:
  """The DPO parts of a run (see the module docstring)."""
  if run.objective != "dpo":
    raise TrainingError(f"the DPO task needs config.objective='dpo', got {run.objective!r}")
  dpo = dpo_config(run)
  return Task(name="dpo", load=load_sft, datasets=functools.partial(dpo_datasets, dpo),
              split=functools.partial(dpo_split, dpo), make_steps=functools.partial(dpo_steps, dpo),
              summarise=summarise_eval, flops_per_token=functools.partial(dpo_flops, dpo),
              export_meta={"objective": "dpo"})


def train_dpo(run: RunSettings, *, log_to_console: bool = True) -> RunResult:
  return train_and_evaluate(run, log_to_console=log_to_console, task=dpo_task(run))
