"""DPO on the shared training loop: `python -m telugu_jax.train --config configs/dpo.py`.

`train_dpo(config)` is `train_and_evaluate(config, task=DPOTask(config))`: mesh, shardings, resume, logging,
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
import json
import os

import jax
import numpy as np

from telugu_jax.chat_format import ChatFormat
from telugu_jax.dpo.data import PairCorpus, PairLoaderConfig, batches_per_epoch, pair_corpus, pair_dataset
from telugu_jax.dpo.loss import sequence_logps
from telugu_jax.dpo.objective import DPOConfig, dpo_objective, summarise_eval
from telugu_jax.model import Llama
from telugu_jax.model.io import is_model_dir, load_model, resolve_model_dir, save_model
from telugu_jax.model.lora import merge_lora
from telugu_jax.tokenizer import check_vocab, load_tokenizer
from telugu_jax.train import sharding as sh
from telugu_jax.train.loop import RunResult, Task, TrainingError, export_model, train_and_evaluate, with_train_settings
from telugu_jax.train.metrics import flops_per_token
from telugu_jax.train.step import make_steps


def dpo_config(config) -> DPOConfig:
  d = config.dpo
  if d.precompute_reference:
    reference = "precomputed"
  else:
    reference = "adapter_off" if config.mode == "lora" else "copy"
  try:
    return DPOConfig(beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, reference=reference)
  except ValueError as e:
    raise TrainingError(str(e)) from None


def _write_rejected(path: str, corpus: PairCorpus) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for e in corpus.rejections:
      f.write(json.dumps(e, ensure_ascii=False) + "\n")
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


class DPOTask(Task):
  """The DPO parts of a run (see the module docstring)."""

  def __init__(self, config):
    if config.get("objective", "sft") != "dpo":
      raise TrainingError(f"DPOTask needs config.objective='dpo', got {config.get('objective')!r}")
    if config.mode not in ("lora", "full"):
      raise TrainingError(f"mode={config.mode!r}; DPO trains 'lora' or 'full'")
    self.dpo = dpo_config(config)
    self.base_dir: str | None = None     # the model the exported adapter applies to
    self.model_cfg = self.params = None

  # ---- set-up ------------------------------------------------------------------------------------
  def load(self, config):
    if not config.base or not is_model_dir(resolve_model_dir(config.base)):
      raise TrainingError(
          f"SFT model {config.base!r} not found: DPO starts from an SFT model. Train one with "
          "`python -m telugu_jax.train --config configs/lora.py` and pass --config.base=runs/lora")
    sft = load_model(config.base, with_tokenizer=not config.tokenizer)
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else sft.tokenizer
    if tokenizer is None:
      raise TrainingError(f"no tokenizer: {config.base} has no tokenizer/ folder; set config.tokenizer")
    check_vocab(tokenizer, sft.config.vocab_size)
    params = sft.variables["params"]
    self.base_dir = resolve_model_dir(config.base)
    if "lora" in sft.variables:
      # The reference is the SFT model; merged once, it becomes the frozen base the DPO adapter trains on
      # (LoRA), or the start of every weight (full fine-tuning, which exports full weights and needs no base).
      params = jax.tree_util.tree_map(np.asarray, merge_lora(params, sft.variables["lora"], sft.lora_config))
      self.base_dir = os.path.join(os.path.abspath(config.workdir), "sft_merged")
      if config.mode == "lora" and jax.process_index() == 0 and not is_model_dir(self.base_dir):
        save_model(self.base_dir, sft.config, params=params, tokenizer=tokenizer,
                   extra={"merged_from": sft.path})
    model_cfg = with_train_settings(sft.config, config)
    self.model_cfg, self.params = model_cfg, params
    return model_cfg, params, tokenizer

  def datasets(self, config, tokenizer, workdir):
    d = config.data
    if d.kind != "preference":
      raise TrainingError(f"data.kind={d.kind!r}; DPO reads preference pairs (data.kind='preference')")
    fmt = ChatFormat(tokenizer)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    try:
      train = pair_corpus(list(d.train), fmt, d.max_seq_len, config.dpo.over_long)
      val = pair_corpus(list(d.validation), fmt, d.max_seq_len, config.dpo.over_long) if d.validation else None
    except (FileNotFoundError, ValueError) as e:
      raise TrainingError(str(e)) from None
    if jax.process_index() == 0:
      _write_rejected(os.path.join(workdir, "rejected.jsonl"), train)
    if self.dpo.reference == "precomputed":
      ref = functools.partial(reference_logps, self.model_cfg, self.params, pad_id=tokenizer.pad_id,
                              batch_size=d.batch_size, max_seq_len=d.max_seq_len)
      train = dataclasses.replace(train, ref_logps=ref(train))   # a copy: the cached corpus stays as it was
      val = dataclasses.replace(val, ref_logps=ref(val)) if val is not None else None
    cfg = PairLoaderConfig(max_seq_len=d.max_seq_len, batch_size=d.batch_size, shuffle=True, seed=d.seed,
                           num_epochs=None, pad_to_multiple=config.dpo.pad_to_multiple)
    eval_cfg = dataclasses.replace(cfg, shuffle=False, num_epochs=1)
    train_ds = pair_dataset(train, cfg, tokenizer.pad_id, **shard)
    val_fn = (lambda: pair_dataset(val, eval_cfg, tokenizer.pad_id, **shard)) if val is not None else None
    return train_ds, val_fn, batches_per_epoch(train, d.batch_size)

  def split(self, variables, mode):
    trainable, frozen = super().split(variables, mode)
    if self.dpo.reference == "copy":
      frozen = {**frozen, "reference": variables["params"]}
    self.params = None  # the loop owns the weights from here on
    return trainable, frozen

  # ---- steps and evaluation ----------------------------------------------------------------------
  def make_steps(self, model, tx, *, accum, z_loss, schedule, loss_chunk=0):
    if z_loss or loss_chunk:
      raise TrainingError("train.z_loss and train.loss_chunk apply to cross-entropy training; set them to 0 for DPO")
    return make_steps(model, tx, accum=accum, schedule=schedule, objective=dpo_objective(model, self.dpo))

  def evaluate(self, p_eval, state, dataset, mesh) -> dict:
    sums: dict[str, float] = {}
    for batch in dataset:
      out = jax.device_get(p_eval(state, sh.shard_batch(batch, mesh)))
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + float(v)
    return summarise_eval(sums)

  def flops_per_token(self, model_cfg, seq_len, mode):
    # The policy's forward + backward, and a forward of the reference (2 N per token) unless precomputed.
    ref = 0.0 if self.dpo.reference == "precomputed" else flops_per_token(model_cfg, seq_len, "full") / 3
    return flops_per_token(model_cfg, seq_len, mode) + ref

  def export(self, config, workdir, state, model_cfg, lora_cfg, tokenizer) -> str:
    if lora_cfg is None:
      return export_model(config, workdir, state, model_cfg, lora_cfg, tokenizer)
    out = os.path.join(workdir, "model")
    lora = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), state.trainable["lora"])
    if jax.process_index() == 0:
      save_model(out, model_cfg.replace(remat=False), lora=lora, lora_config=lora_cfg, base=self.base_dir,
                 tokenizer=tokenizer, overwrite=True, extra={"trained_steps": int(state.step), "objective": "dpo"})
    return out


def train_dpo(config, *, log_to_console: bool = True) -> RunResult:
  return train_and_evaluate(config, log_to_console=log_to_console, task=DPOTask(config))
