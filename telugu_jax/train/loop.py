"""The training loop: owns I/O (data iterator, checkpoints, logs); the math is in step.py, the pieces in
core.py, the objective-dependent parts in a `Task` (tasks.py).

`train_and_evaluate(run)` runs SFT (LoRA or full), continued pretraining or DPO from typed settings
(`RunSettings.from_config(load_config("configs/lora.py", overrides))`), resumes from the run folder when it
holds checkpoints, and finishes by writing a model directory (`WORKDIR/model`: the adapter plus a reference to
the base, or full weights) that chat, evaluate and export load. With a validation set, that model is the best
checkpoint by validation loss (`train.export="best"`, the default), not the last state: after early stopping
the last state is `patience` evaluations past the best.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time

import jax
import numpy as np

from telugu_jax.model import Llama
from telugu_jax.train import sharding as sh
from telugu_jax.train.checkpoint import RunCheckpoints
from telugu_jax.train.core import (
  evaluate_dataset,
  export_state,
  init_state,
  jit_steps,
  make_run_mesh,
  restore_state,
  to_host,
  write_run_config,
)
from telugu_jax.train.errors import TrainingDiverged, TrainingError
from telugu_jax.train.metrics import MetricsLogger, peak_flops
from telugu_jax.train.optim import make_optimizer
from telugu_jax.train.settings import RunSettings
from telugu_jax.train.step import TrainState
from telugu_jax.train.tasks import Task, task_for

__all__ = ["RunResult", "TrainingDiverged", "TrainingError", "train_and_evaluate", "write_samples"]


@dataclasses.dataclass
class RunResult:
  workdir: str
  model_dir: str
  steps: int
  final_metrics: dict
  best_val_loss: float | None
  exported_step: int = 0               # the step whose weights WORKDIR/model holds
  # Wall-clock seconds: set-up (base load, data index, state, checkpoints), the steps (the first one
  # holds compilation), the final checkpoint wait + export.
  timings: dict = dataclasses.field(default_factory=dict)
  traces: dict = dataclasses.field(default_factory=dict)   # times each jitted step was traced (1 = compiled once)


def train_and_evaluate(run: RunSettings, *, log_to_console: bool = True, task: Task | None = None) -> RunResult:
  if not isinstance(run, RunSettings):
    raise TypeError("train_and_evaluate takes RunSettings: RunSettings.from_config(load_config(path, overrides))")
  task = task or task_for(run)
  t_begin = time.perf_counter()
  sh.maybe_initialize_distributed()   # before any other JAX call (the CLI has called it already)
  workdir = os.path.abspath(run.workdir)
  os.makedirs(workdir, exist_ok=True)
  start = task.load(run)
  model_cfg, tokenizer, mode, t = start.model_cfg, start.tokenizer, run.mode, run.train
  if mode == "lora" and start.params is None:
    raise TrainingError("LoRA needs a base model (config.base); to train from scratch use mode='full'")

  data = task.datasets(run, start, workdir)
  total_steps = t.max_steps if t.max_steps > 0 else int(math.ceil(t.epochs * data.batches_per_epoch))
  if total_steps < 1:
    raise TrainingError(f"no training steps: {data.batches_per_epoch} batches per epoch; add data or lower "
                        "data.batch_size")
  mesh = make_run_mesh(run.mesh)
  dp = sh.data_parallel_size(mesh)
  if run.data.batch_size % (dp * t.grad_accum):
    raise TrainingError(f"data.batch_size={run.data.batch_size} must be divisible by grad_accum ({t.grad_accum}) x "
                        f"the data-parallel size of the mesh ({dp})")

  model = Llama(model_cfg, lora=run.lora)
  tx, schedule = make_optimizer(run.optim, total_steps)
  state, shardings = init_state(model, start.params, tx, mesh, mode=mode, seed=t.seed, frozen_dtype=t.frozen_dtype,
                                split=task.split)
  start = dataclasses.replace(start, params=None)   # the state owns the weights from here on
  p_train, p_eval, traces = jit_steps(*task.make_steps(model, tx, run, schedule), shardings, mesh)

  ckpts = RunCheckpoints(os.path.join(workdir, "checkpoints"), keep_latest=t.keep_latest, keep_best=t.keep_best,
                         async_save=t.async_checkpoint)
  data_iter = iter(data.train)
  first = 0
  if run.resume and ckpts.latest_step() is not None:
    state, data_state, first = restore_state(ckpts, "latest", state, shardings)
    if data_state is not None:
      data_iter.set_state(data_state)
  write_run_config(run, workdir, model_cfg, total_steps, data.batches_per_epoch)

  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.trainable))
  logger = MetricsLogger(workdir, total_steps=total_steps, start_step=first, console=log_to_console,
                         peak_flops=peak_flops(t.peak_tflops),
                         flops_per_token=task.flops_per_token(model_cfg, run.data.max_seq_len, mode))
  for bad, why in ckpts.skipped:
    logger.info(f"warning: checkpoint step {bad} in {ckpts.directory} cannot be restored ({why}); skipped (moved to "
                f"{ckpts.directory}-skipped/{bad}), resuming from step {first}")
  logger.info(f"{mode} run: {model_cfg.num_params() / 1e6:.2f}M base parameters, {n_trainable / 1e6:.3f}M trainable; "
              f"{data.batches_per_epoch} batches/epoch, {total_steps} steps; mesh {dict(mesh.shape)}; "
              f"workdir {workdir}" + (f"; resumed at step {first}" if first else ""))

  best_val, bad_evals, last_metrics, val_losses = None, 0, {}, {}
  step = first
  t_loop = time.perf_counter()
  t_first = None
  try:
    for step in range(first + 1, total_steps + 1):
      batch = next(data_iter)
      if int(np.sum(batch["loss_mask"])) == 0:
        logger.warn_empty_batch(step)
      state, metrics = p_train(state, sh.shard_batch(batch, mesh))
      if step % t.log_every == 0 or step == total_steps or step == first + 1:
        metrics = to_host(metrics)
        t_first = t_first or time.perf_counter()
        if not np.isfinite(metrics["loss"]):
          raise TrainingDiverged(
              f"loss is {metrics['loss']} at step {step}; last good checkpoint: step {ckpts.latest_step()} in "
              f"{ckpts.directory}. Lower optim.lr or check the data, then resume.")
        last_metrics = logger.log_train(step, metrics)
      else:
        logger.count_tokens(int(np.sum(batch["segment_ids"] > 0)), int(np.sum(batch["loss_mask"])))
      val_metrics = None
      if data.validation is not None and (step % t.eval_every == 0 or step == total_steps):
        val_metrics = task.summarise(evaluate_dataset(
            functools.partial(_eval_batch, p_eval, state, mesh), data.validation()))
        logger.log_eval(step, val_metrics)
        val_losses[step] = val_metrics["val_loss"]
        improved = best_val is None or val_metrics["val_loss"] < best_val - t.min_delta
        best_val, bad_evals = (val_metrics["val_loss"], 0) if improved else (best_val, bad_evals + 1)
      if t.sample_every and (step % t.sample_every == 0 or step == total_steps):
        write_samples(workdir, step, state, model_cfg, run.lora, tokenizer, list(t.sample_prompts), logger,
                      template=start.template)
      # Orbax reads the sharded jax.Arrays directly: each host writes its own shards, nothing is gathered.
      # A new best evaluation is saved too (keep_best retains it), so the best model can be exported.
      new_best = val_metrics is not None and t.keep_best > 0 and bad_evals == 0
      if step % t.save_every == 0 or step == total_steps or new_best or (t.patience and bad_evals >= t.patience):
        ckpts.save(step, state, data_iter.get_state(), metrics=val_metrics, force=True)
      if t.patience and bad_evals >= t.patience:
        logger.info(f"early stop at step {step}: val loss has not improved for {bad_evals} evaluations")
        break
    t_steps = time.perf_counter()
    ckpts.wait()
    exported_step = step
    best = ckpts.best_step() if (t.export == "best" and data.validation is not None and t.keep_best) else None
    if best is not None and best != step:
      state, _, exported_step = restore_state(ckpts, best, state, shardings, with_data=False)
      logger.info(f"exporting the best checkpoint by validation loss, step {best}, not the last step {step} "
                  "(--config.train.export=last exports the last)")
  finally:
    ckpts.wait()
    logger.close()
  extra = {"run_steps": int(step), "val_loss": val_losses.get(exported_step), **task.export_meta,
           "chat_template": start.template.to_dict()}
  model_dir = export_state(workdir, state, model_cfg, tokenizer, lora_config=run.lora, base_dir=start.base_dir,
                           extra=extra)
  ckpts.close()
  t_end = time.perf_counter()
  timings = {"setup_s": t_loop - t_begin, "first_step_s": (t_first or t_steps) - t_loop,
             "later_steps_s": t_steps - (t_first or t_steps), "save_export_s": t_end - t_steps,
             "total_s": t_end - t_begin}
  return RunResult(workdir=workdir, model_dir=model_dir, steps=step, final_metrics=last_metrics,
                   best_val_loss=best_val, exported_step=exported_step, timings=timings, traces=dict(traces))


def _eval_batch(p_eval, state, mesh, batch):
  return p_eval(state, sh.shard_batch(batch, mesh))


def write_samples(workdir, step, state: TrainState, model_cfg, lora_cfg, tokenizer, prompts, logger, *,
                  template=None) -> None:
  """Greedy answers to fixed prompts, so a run's progress can be read, not only plotted (WORKDIR/samples.jsonl)."""
  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.data.records import Turn
  from telugu_jax.generate import Generator, SamplingConfig

  if not prompts:
    return
  variables = to_host({**state.frozen, **state.trainable})   # every process: a collective on several hosts
  if jax.process_index() != 0:
    return
  gen = Generator(model_cfg.replace(remat=False), variables, tokenizer=tokenizer, lora_config=lora_cfg)
  fmt = ChatFormat(tokenizer, template) if template is not None else ChatFormat(tokenizer)
  outs = gen.generate([fmt.encode_prompt([Turn("user", p)]) for p in prompts], SamplingConfig(max_new_tokens=48),
                      stop_strings=fmt.template.stop_strings)
  with open(os.path.join(workdir, "samples.jsonl"), "a", encoding="utf-8") as f:
    for p, o in zip(prompts, outs, strict=True):
      f.write(json.dumps({"step": step, "prompt": p, "answer": o.text.strip(), "finish_reason": o.finish_reason},
                         ensure_ascii=False) + "\n")
      logger.info(f"  [{step}] {p} -> {o.text.strip()[:120]} ({o.finish_reason})")
