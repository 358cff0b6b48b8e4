"""The training loop: owns I/O (data iterator, checkpoints, logs); the math is in step.py.

`train_and_evaluate(config)` runs SFT (LoRA or full) or continued pretraining from a ConfigDict (see
configs/*.py), resumes from the run folder when it holds checkpoints, and finishes by writing a model
directory (`WORKDIR/model`: the adapter plus a reference to the base, or full weights) that chat,
evaluate and export load.

The parts that depend on the objective (which model to start from, the data, the step's objective,
the validation summary, what is exported) are methods of a `Task`; the default is SFT/pretraining,
and DPO (telugu_jax/dpo/train.py) overrides them, so both share one loop: mesh, shardings, resume,
logging, checkpoints, early stopping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from telugu_jax.chat_format import ChatFormat
from telugu_jax.model import Llama, LlamaConfig, LoraConfig
from telugu_jax.model.io import is_model_dir, load_model, read_meta, resolve_model_dir, save_model
from telugu_jax.model.lora import init_lora, split_variables
from telugu_jax.tokenizer import check_vocab, load_tokenizer
from telugu_jax.train import sharding as sh
from telugu_jax.train.checkpoint import RunCheckpoints, abstract_with_shardings
from telugu_jax.train.metrics import MetricsLogger, flops_per_token, peak_flops
from telugu_jax.train.optim import make_optimizer
from telugu_jax.train.step import TrainState, create_state, make_steps


class TrainingError(RuntimeError):
  pass


class TrainingDiverged(TrainingError):
  pass


@dataclasses.dataclass
class RunResult:
  workdir: str
  model_dir: str
  steps: int
  final_metrics: dict
  best_val_loss: float | None
  # Wall-clock seconds: set-up (base load, data index, state, checkpoints), the steps (the first one
  # holds compilation), the final checkpoint wait + export.
  timings: dict = dataclasses.field(default_factory=dict)


# ---- set-up helpers --------------------------------------------------------------------------------

def _load_base(config):
  """(LlamaConfig, params | None, tokenizer) from `config.base`, or from a preset when pretraining from scratch."""
  if config.base:
    if not is_model_dir(resolve_model_dir(config.base)):
      raise TrainingError(
          f"base checkpoint {config.base!r} not found. Convert your PyTorch base with "
          f"`python -m telugu_jax.convert --from /path/to/pytorch_model --to {config.base}`, "
          "or run `make demo` to train a small one (then use --config.base=runs/demo/base).")
    base = load_model(config.base, with_tokenizer=not config.tokenizer)
    if read_meta(config.base).get("lora"):
      raise TrainingError(f"{config.base} holds an adapter; merge it first (python -m telugu_jax.export --merge)")
    model_cfg, params, tokenizer = base.config, base.variables["params"], base.tokenizer
  else:
    if not config.tokenizer:
      raise TrainingError("training from scratch (no config.base) needs config.tokenizer")
    model_cfg, params, tokenizer = None, None, None
  if config.tokenizer:
    tokenizer = load_tokenizer(config.tokenizer)
  if tokenizer is None:
    raise TrainingError(f"no tokenizer: {config.base} has no tokenizer/ folder; set config.tokenizer")
  if model_cfg is None:
    overrides = dict(config.model.overrides) if "overrides" in config.model else {}
    model_cfg = LlamaConfig.preset(config.model.preset, vocab_size=tokenizer.vocab_size, **overrides)
  check_vocab(tokenizer, model_cfg.vocab_size)
  return with_train_settings(model_cfg, config), params, tokenizer


def with_train_settings(model_cfg: LlamaConfig, config) -> LlamaConfig:
  """The model as this run executes it: compute dtype, remat, attention kernel, sequence length."""
  t = config.train
  return model_cfg.replace(dtype=t.dtype, remat=t.remat, attention_block=t.get("attention_block", 0),
                           attention=attention_kernel(t.get("attention", "auto"), t.dtype, model_cfg.head_dim),
                           max_seq_len=max(model_cfg.max_seq_len, config.data.max_seq_len))


def attention_kernel(choice: str, dtype: str, head_dim: int = 64, backend: str | None = None) -> str:
  """`train.attention`: "auto" takes cuDNN's fused flash attention on an NVIDIA GPU in half precision for the
  head sizes its kernels take (a multiple of 8, at most 128) — 2.1x the XLA path's training step on an H100
  at 1024 tokens, 2.8x less memory (docs/benchmarks.md) — and XLA's otherwise. "xla" and "cudnn" force one."""
  if choice == "auto":
    backend = backend or jax.default_backend()
    fits = dtype in ("bfloat16", "float16") and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if backend == "gpu" and fits else "xla"
  if choice not in ("xla", "cudnn"):
    raise TrainingError(f"train.attention={choice!r}; choose 'auto', 'xla' or 'cudnn'")
  return choice


def _datasets(config, tokenizer, workdir):
  from telugu_jax.data import loader as L

  d = config.data
  cfg = L.LoaderConfig(max_seq_len=d.max_seq_len, batch_size=d.batch_size, packing=d.packing,
                       num_packing_bins=d.num_packing_bins, shuffle=True, seed=d.seed, num_epochs=None)
  eval_cfg = dataclasses.replace(cfg, shuffle=False, num_epochs=1)
  kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if d.kind == "sft":
    fmt = ChatFormat(tokenizer)
    train = L.sft_dataset(list(d.train), fmt, cfg, rejected_path=os.path.join(workdir, "rejected.jsonl"), **kw)
    per_epoch = L.count_batches(list(d.train), fmt, cfg)
    val = (lambda: L.sft_dataset(list(d.validation), fmt, eval_cfg, **kw)) if d.validation else None
  elif d.kind == "pretrain":
    train = L.pretrain_dataset(list(d.train), tokenizer, cfg, **kw)
    per_epoch = L.count_pretrain_batches(list(d.train), tokenizer, cfg)
    val = (lambda: L.pretrain_dataset(list(d.validation), tokenizer, eval_cfg, **kw)) if d.validation else None
  else:
    raise TrainingError(f"data.kind={d.kind!r}; use 'sft' or 'pretrain'")
  return train, val, per_epoch


def _to_host(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


class Task:
  """The objective-dependent parts of a run. This default trains SFT or pretraining (config.data.kind)."""

  def load(self, config):
    """(LlamaConfig, initial params or None, tokenizer)."""
    return _load_base(config)

  def datasets(self, config, tokenizer, workdir):
    """(train dataset, a function returning a fresh validation dataset or None, batches per epoch)."""
    return _datasets(config, tokenizer, workdir)

  def split(self, variables: dict, mode: str) -> tuple[dict, dict]:
    return split_variables(variables, mode)

  def make_steps(self, model, tx, *, accum: int, z_loss: float, schedule, loss_chunk: int = 0):
    return make_steps(model, tx, accum=accum, z_loss=z_loss, schedule=schedule, loss_chunk=loss_chunk)

  def evaluate(self, p_eval, state, dataset, mesh) -> dict:
    """Validation metrics; `val_loss` picks the best checkpoint and drives early stopping."""
    return evaluate(p_eval, state, dataset, mesh)

  def flops_per_token(self, model_cfg, seq_len: int, mode: str) -> float:
    return flops_per_token(model_cfg, seq_len, mode=mode)

  def export(self, config, workdir, state, model_cfg, lora_cfg, tokenizer) -> str:
    return export_model(config, workdir, state, model_cfg, lora_cfg, tokenizer)


# ---- the loop ----------------------------------------------------------------------------------------

def train_and_evaluate(config, *, log_to_console: bool = True, task: Task | None = None) -> RunResult:
  task = task or Task()
  t_begin = time.perf_counter()
  sh.maybe_initialize_distributed()
  workdir = os.path.abspath(config.workdir)
  os.makedirs(workdir, exist_ok=True)
  model_cfg, base_params, tokenizer = task.load(config)
  mode = config.mode
  lora_cfg = LoraConfig(**config.lora.to_dict()) if mode == "lora" else None
  if mode == "lora" and base_params is None:
    raise TrainingError("LoRA needs a base model (config.base); to train from scratch use mode='full'")

  train_ds, val_fn, per_epoch = task.datasets(config, tokenizer, workdir)
  t = config.train
  total_steps = t.max_steps if t.max_steps > 0 else int(math.ceil(t.epochs * per_epoch))
  if total_steps < 1:
    raise TrainingError(f"no training steps: {per_epoch} batches per epoch; add data or lower data.batch_size")

  devices = jax.devices()[: config.mesh.devices] if config.mesh.devices else None
  mesh = sh.make_mesh(tuple(config.mesh.shape), devices=devices)
  dp = sh.data_parallel_size(mesh)
  if config.data.batch_size % (dp * t.grad_accum):
    raise TrainingError(f"data.batch_size={config.data.batch_size} must be divisible by grad_accum ({t.grad_accum}) x "
                        f"the data-parallel size of the mesh ({dp})")

  model = Llama(model_cfg, lora=lora_cfg)
  rng = jax.random.PRNGKey(t.seed)
  init_rng, state_rng = jax.random.split(rng)
  abstract_vars = jax.eval_shape(lambda: model.init_variables(init_rng))
  variables: dict[str, Any] = {}
  if base_params is not None:
    variables["params"] = base_params
  else:
    variables["params"] = jax.jit(lambda r: model.init_variables(r)["params"])(init_rng)
  if mode == "lora":
    variables["lora"] = init_lora(abstract_vars["lora"], init_rng)
  _check_shapes(variables, abstract_vars)
  trainable, frozen = task.split(variables, mode)
  trainable = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), trainable)
  frozen = jax.tree_util.tree_map(lambda x: jnp.asarray(x, config.train.frozen_dtype), frozen)

  tx, schedule = make_optimizer(config.optim, total_steps)
  abstract_state = jax.eval_shape(lambda tr, fr: create_state(tr, fr, tx, state_rng), trainable, frozen)
  state_shardings = sh.tree_shardings(abstract_state, mesh)
  create = jax.jit(lambda tr, fr: create_state(tr, fr, tx, state_rng), out_shardings=state_shardings)
  state = create(jax.device_put(trainable, state_shardings.trainable), jax.device_put(frozen, state_shardings.frozen))
  del variables, trainable, frozen, base_params

  train_step, eval_step = task.make_steps(model, tx, accum=t.grad_accum, z_loss=t.z_loss, schedule=schedule,
                                          loss_chunk=t.get("loss_chunk", 0))
  batch_shard = sh.batch_sharding(mesh)
  p_train = jax.jit(train_step, in_shardings=(state_shardings, batch_shard), out_shardings=(state_shardings, None),
                    donate_argnums=(0,))
  p_eval = jax.jit(eval_step, in_shardings=(state_shardings, batch_shard))

  ckpts = RunCheckpoints(os.path.join(workdir, "checkpoints"), keep_latest=t.keep_latest, keep_best=t.keep_best,
                         async_save=t.async_checkpoint)
  data_iter = iter(train_ds)
  start = 0
  latest = ckpts.latest_step() if config.resume else None
  if latest is not None:
    saved, data_state = ckpts.restore(latest, abstract_with_shardings(abstract_state, state_shardings))
    state = state.replace(step=saved["step"], trainable=saved["trainable"], opt_state=saved["opt_state"],
                          rng=saved["rng"])
    if data_state is not None:
      data_iter.set_state(data_state)
    start = int(latest)
  _write_run_config(config, workdir, model_cfg, total_steps, per_epoch)

  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.trainable))
  fpt = task.flops_per_token(model_cfg, config.data.max_seq_len, mode)
  logger = MetricsLogger(workdir, total_steps=total_steps, start_step=start, console=log_to_console,
                         peak_flops=peak_flops(t.peak_tflops), flops_per_token=fpt)
  logger.info(f"{mode} run: {model_cfg.num_params() / 1e6:.2f}M base parameters, {n_trainable / 1e6:.3f}M trainable; "
              f"{per_epoch} batches/epoch, {total_steps} steps; mesh {dict(mesh.shape)}; workdir {workdir}"
              + (f"; resumed at step {start}" if start else ""))

  best_val, bad_evals, last_metrics = None, 0, {}
  step = start
  t_loop = time.perf_counter()
  t_first = None
  try:
    for step in range(start + 1, total_steps + 1):
      batch = next(data_iter)
      if int(np.sum(batch["loss_mask"])) == 0:
        logger.warn_empty_batch(step)
      state, metrics = p_train(state, sh.shard_batch(batch, mesh))
      if step % t.log_every == 0 or step == total_steps or step == start + 1:
        metrics = _to_host(metrics)
        t_first = t_first or time.perf_counter()
        if not np.isfinite(metrics["loss"]):
          raise TrainingDiverged(
              f"loss is {metrics['loss']} at step {step}; last good checkpoint: step {ckpts.latest_step()} in "
              f"{ckpts.directory}. Lower optim.lr or check the data, then resume.")
        last_metrics = logger.log_train(step, metrics)
      else:
        logger.count_tokens(int(np.sum(batch["segment_ids"] > 0)), int(np.sum(batch["loss_mask"])))
      val_metrics = None
      if val_fn is not None and (step % t.eval_every == 0 or step == total_steps):
        val_metrics = task.evaluate(p_eval, state, val_fn(), mesh)
        logger.log_eval(step, val_metrics)
        if best_val is None or val_metrics["val_loss"] < best_val - t.min_delta:
          best_val, bad_evals = val_metrics["val_loss"], 0
        else:
          bad_evals += 1
      if t.sample_every and (step % t.sample_every == 0 or step == total_steps):
        write_samples(workdir, step, state, model_cfg, lora_cfg, tokenizer, list(t.sample_prompts), logger)
      # Orbax reads the sharded jax.Arrays directly: each host writes its own shards, nothing is gathered.
      if step % t.save_every == 0 or step == total_steps or (t.patience and bad_evals >= t.patience):
        ckpts.save(step, state, data_iter.get_state(), metrics=val_metrics, force=True)
      if t.patience and bad_evals >= t.patience:
        logger.info(f"early stop at step {step}: val loss has not improved for {bad_evals} evaluations")
        break
  finally:
    t_steps = time.perf_counter()
    ckpts.wait()
    logger.close()
  model_dir = task.export(config, workdir, state, model_cfg, lora_cfg, tokenizer)
  ckpts.close()
  t_end = time.perf_counter()
  timings = {"setup_s": t_loop - t_begin, "first_step_s": (t_first or t_steps) - t_loop,
             "later_steps_s": t_steps - (t_first or t_steps), "save_export_s": t_end - t_steps,
             "total_s": t_end - t_begin}
  return RunResult(workdir=workdir, model_dir=model_dir, steps=step, final_metrics=last_metrics,
                   best_val_loss=best_val, timings=timings)


def evaluate(p_eval, state: TrainState, dataset, mesh) -> dict:
  """Loss-token-weighted mean cross-entropy over one pass of `dataset`, and its perplexity."""
  sums = {"ce_sum": 0.0, "tokens": 0.0, "correct": 0.0}
  for batch in dataset:
    out = _to_host(p_eval(state, sh.shard_batch(batch, mesh)))
    for k in sums:
      sums[k] += float(out[k])
  n = max(sums["tokens"], 1.0)
  loss = sums["ce_sum"] / n
  return {"val_loss": loss, "val_ppl": float(math.exp(min(loss, 50.0))), "val_accuracy": sums["correct"] / n,
          "val_tokens": sums["tokens"]}


def write_samples(workdir, step, state: TrainState, model_cfg, lora_cfg, tokenizer, prompts, logger) -> None:
  """Greedy answers to fixed prompts, so a run's progress can be read, not only plotted (WORKDIR/samples.jsonl)."""
  from telugu_jax.chat_format import ChatFormat
  from telugu_jax.data.records import Turn
  from telugu_jax.generate import Generator, SamplingConfig

  if jax.process_index() != 0 or not prompts:
    return
  variables = _to_host({**state.frozen, **state.trainable})
  gen = Generator(model_cfg.replace(remat=False), variables, tokenizer=tokenizer, lora_config=lora_cfg)
  fmt = ChatFormat(tokenizer)
  outs = gen.generate([fmt.encode_prompt([Turn("user", p)]) for p in prompts], SamplingConfig(max_new_tokens=48),
                      stop_strings=fmt.template.stop_strings)
  with open(os.path.join(workdir, "samples.jsonl"), "a", encoding="utf-8") as f:
    for p, o in zip(prompts, outs, strict=True):
      f.write(json.dumps({"step": step, "prompt": p, "answer": o.text.strip(), "finish_reason": o.finish_reason},
                         ensure_ascii=False) + "\n")
      logger.info(f"  [{step}] {p} -> {o.text.strip()[:120]} ({o.finish_reason})")


def _check_shapes(variables: dict, abstract: dict) -> None:
  got = jax.tree_util.tree_map(lambda x: tuple(x.shape), variables)
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape), {k: abstract[k] for k in variables})
  if got != want:
    flat_g = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    flat_w = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    diffs = [f"{jax.tree_util.keystr(k)}: expected {flat_w.get(k)}, found {flat_g.get(k)}"
             for k in set(flat_g) | set(flat_w) if flat_g.get(k) != flat_w.get(k)]
    raise TrainingError("base weights do not fit the model config: " + "; ".join(sorted(diffs)[:5]))


def _write_run_config(config, workdir, model_cfg, total_steps, per_epoch) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"config": json.loads(config.to_json_best_effort()), "model": model_cfg.to_dict(),
               "total_steps": total_steps, "batches_per_epoch": per_epoch}, f, indent=1, ensure_ascii=False)


def export_model(config, workdir, state: TrainState, model_cfg, lora_cfg, tokenizer) -> str:
  """Write WORKDIR/model: an adapter directory pointing at the base (LoRA) or full weights."""
  out = os.path.join(workdir, "model")
  cfg = model_cfg.replace(remat=False)
  trainable = _to_host(state.trainable)
  if jax.process_index() != 0:
    return out
  if lora_cfg is not None:
    save_model(out, cfg, lora=trainable["lora"], lora_config=lora_cfg, base=resolve_model_dir(config.base),
               tokenizer=tokenizer,
               overwrite=True, extra={"trained_steps": int(state.step)})
  else:
    save_model(out, cfg, params=trainable["params"], tokenizer=tokenizer, overwrite=True,
               extra={"trained_steps": int(state.step)})
  return out
