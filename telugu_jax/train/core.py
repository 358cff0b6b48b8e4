"""The pieces of a training run, each usable on its own (docs/custom_loop.md writes a loop with them).

    load_base(run)                        -> Start: base weights, tokenizer, the model config as the run executes it
    make_run_mesh(run.mesh)               -> Mesh
    init_state(model, params, tx, mesh, mode=..., seed=...)   -> (TrainState sharded on the mesh, its shardings)
    jit_steps(train_step, eval_step, shardings, mesh)         -> (p_train, p_eval), compiled once each
    restore_state(checkpoints, step | "best" | "latest", state, shardings)  -> (state, data-iterator state)
    evaluate_dataset(fn, dataset)         -> sums of fn's outputs over one pass
    export_state(workdir, state, model_cfg, tokenizer, lora_config=..., base_dir=...)  -> WORKDIR/model

Everything that leaves the devices goes through `to_host`, which gathers arrays that span other processes'
devices on every process (a collective: all processes call it); only process 0 writes shared files.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from telugu_jax.chat_format import ChatTemplate
from telugu_jax.model import Llama, LlamaConfig, LoraConfig
from telugu_jax.model.io import is_model_dir, load_model, read_meta, resolve_model_dir, save_model
from telugu_jax.model.lora import init_lora, split_variables
from telugu_jax.tokenizer import TokenizerError, check_vocab, load_tokenizer
from telugu_jax.train import cpu as cpu_recipe
from telugu_jax.train import sharding as sh
from telugu_jax.train.checkpoint import RunCheckpoints, abstract_with_shardings
from telugu_jax.train.errors import TrainingError
from telugu_jax.train.settings import MeshSettings, RunSettings
from telugu_jax.train.step import TrainState, create_state
from telugu_jax.train.tasks import Start, run_template


def to_host(tree: Any) -> Any:
  """numpy copies of a pytree of arrays on every process, gathering shards held by other processes."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree_util.tree_map(get, tree)


# ---- the model and its weights -------------------------------------------------------------------------

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


def attention_block(choice: int, seq_len: int, d_model: int, backend: str | None = None) -> int:
  """`train.attention_block`: -1 ("auto") runs causal attention in query blocks on a CPU when attention is a large
  share of the step (rows at least d_model tokens long), 8 blocks per row and at least 32 tokens each; one pass
  elsewhere. 0: one pass; N: blocks of N. Why: on XLA:CPU the softmax's element-wise work dominates attention,
  and the blocks skip ~44% of it (demo preset, d_model 256 at 256 tokens: docs/benchmarks.md); at d_model 1024
  and 256 tokens (300m) they only added compile time (first step 37 -> 56 s) for no step-time gain."""
  if choice >= 0:
    return choice
  if (backend or jax.default_backend()) != "cpu" or seq_len < d_model:
    return 0
  block = max(cpu_recipe.CPU_ATTENTION_BLOCK, -(-seq_len // 8))
  return block if block < seq_len else 0


def with_train_settings(model_cfg: LlamaConfig, run: RunSettings) -> LlamaConfig:
  """The model as this run executes it: compute dtype, remat, attention kernel, sequence length."""
  t = run.train
  return model_cfg.replace(dtype=t.dtype, remat=t.remat,
                           attention_block=attention_block(t.attention_block, run.data.max_seq_len, model_cfg.d_model),
                           attention=attention_kernel(t.attention, t.dtype, model_cfg.head_dim),
                           max_seq_len=max(model_cfg.max_seq_len, run.data.max_seq_len))


def load_base(run: RunSettings) -> Start:
  """The base model of an SFT/pretraining run (`run.base`), or a preset when pretraining from scratch."""
  params, model_cfg, tokenizer, base_dir, recorded = None, None, None, None, None
  if run.base:
    base_dir = resolve_model_dir(run.base)
    if not is_model_dir(base_dir):
      raise TrainingError(
          f"base checkpoint {run.base!r} not found. Convert your PyTorch base with "
          f"`python -m telugu_jax.convert --from /path/to/pytorch_model --to {run.base}`, "
          "or run `make demo` to train a small one (then use --config.base=runs/demo/base).")
    if read_meta(run.base).get("lora"):
      raise TrainingError(f"{run.base} holds an adapter; merge it first (python -m telugu_jax.export --merge)")
    base = load_model(run.base, with_tokenizer=not run.tokenizer)
    model_cfg, params, tokenizer = base.config, base.variables["params"], base.tokenizer
    recorded = base.meta.get("chat_template")
  elif not run.tokenizer:
    raise TrainingError("training from scratch (no config.base) needs config.tokenizer")
  if run.tokenizer:
    tokenizer = load_tokenizer(run.tokenizer)
  if tokenizer is None:
    raise TrainingError(f"no tokenizer: {run.base} has no tokenizer/ folder; set config.tokenizer")
  if model_cfg is None:
    model_cfg = LlamaConfig.preset(run.model.preset, vocab_size=tokenizer.vocab_size, **dict(run.model.overrides))
  check_vocab(tokenizer, model_cfg.vocab_size)
  try:
    template = run_template(run, ChatTemplate.from_dict(recorded))
  except TokenizerError as e:
    raise TrainingError(f"{run.base}/model.json: {e}") from None
  return Start(model_cfg=with_train_settings(model_cfg, run), params=params, tokenizer=tokenizer, base_dir=base_dir,
               template=template)


def make_run_mesh(mesh: MeshSettings) -> jax.sharding.Mesh:
  """The run's mesh over the first `mesh.devices` devices (0: all of every process)."""
  devices = jax.devices()[: mesh.devices] if mesh.devices else None
  try:
    return sh.make_mesh(tuple(mesh.shape), devices=devices)
  except ValueError as e:
    raise TrainingError(f"mesh: {e}") from None


def check_shapes(variables: dict, abstract: dict) -> None:
  got = jax.tree_util.tree_map(lambda x: tuple(x.shape), variables)
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape), {k: abstract[k] for k in variables})
  if got != want:
    flat_g = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    flat_w = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    diffs = [f"{jax.tree_util.keystr(k)}: expected {flat_w.get(k)}, found {flat_g.get(k)}"
             for k in set(flat_g) | set(flat_w) if flat_g.get(k) != flat_w.get(k)]
    raise TrainingError("base weights do not fit the model config: " + "; ".join(sorted(diffs)[:5]))


# ---- state ------------------------------------------------------------------------------------------------

def init_state(model: Llama, params: Any, tx, mesh, *, mode: str, seed: int = 0, frozen_dtype: str = "float32",
               split: Callable[[dict, str], tuple[dict, dict]] = split_variables) -> tuple[TrainState, Any]:
  """A fresh TrainState on `mesh`: the base `params` (None: drawn from the model's init), a fresh LoRA
  adapter for mode="lora", trainable weights in float32 and the frozen ones in `frozen_dtype`."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  abstract_vars = jax.eval_shape(lambda: model.init_variables(init_rng))
  variables: dict[str, Any] = {}
  if params is not None:
    variables["params"] = params
  else:
    variables["params"] = jax.jit(lambda r: model.init_variables(r)["params"])(init_rng)
  if mode == "lora":
    variables["lora"] = init_lora(abstract_vars["lora"], init_rng)
  check_shapes({k: v for k, v in variables.items() if k in ("params", "lora")}, abstract_vars)
  trainable, frozen = split(variables, mode)
  trainable = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), trainable)
  frozen = jax.tree_util.tree_map(lambda x: jnp.asarray(x, frozen_dtype), frozen)

  def create(tr, fr):
    return create_state(tr, fr, tx, state_rng)

  shardings = sh.tree_shardings(jax.eval_shape(create, trainable, frozen), mesh)
  state = jax.jit(create, out_shardings=shardings)(jax.device_put(trainable, shardings.trainable),
                                                   jax.device_put(frozen, shardings.frozen))
  return state, shardings


def jit_steps(train_step: Callable, eval_step: Callable, shardings: Any, mesh) -> tuple[Callable, Callable, dict]:
  """The steps jitted with the state's shardings (the train step donates its state). The returned dict
  counts how often each was traced: a correct run traces each once (tests/train/test_loop.py checks)."""
  traces: collections.Counter = collections.Counter()

  def counted(name, fn):
    def traced(*args):
      traces[name] += 1
      return fn(*args)
    return traced

  batch = sh.batch_sharding(mesh)
  p_train = jax.jit(counted("train_step", train_step), in_shardings=(shardings, batch),
                    out_shardings=(shardings, None), donate_argnums=(0,))
  p_eval = jax.jit(counted("eval_step", eval_step), in_shardings=(shardings, batch))
  return p_train, p_eval, traces


def restore_state(checkpoints: RunCheckpoints, step: int | str, state: TrainState, shardings: Any, *,
                  with_data: bool = True) -> tuple[TrainState, dict | None, int]:
  """`state` with the trainable weights, optimiser state, rng and step of checkpoint `step` ("latest",
  "best" or a number) laid out on `shardings`; the frozen base stays as it is (checkpoints never hold it).
  Returns (state, data-iterator state or None, the step restored).

  "latest" is the newest checkpoint that restores: a newer one that does not (cut short by a kill or a full
  disk) is moved aside to CHECKPOINTS-skipped/STEP, so the run can save that step again, and recorded with its
  reason in `checkpoints.skipped` for the caller to report. When none restores, a TrainingError lists why."""
  if step == "latest":
    steps = sorted(checkpoints.all_steps(), reverse=True)
    if not steps:
      raise TrainingError(f"no latest checkpoint in {checkpoints.directory}")
    failed: list[tuple[int, str]] = []
    for s in steps:
      try:
        out = _restore_step(checkpoints, s, state, shardings, with_data=with_data)
      except Exception as e:  # noqa: BLE001 -- whatever Orbax/tensorstore raise for a damaged step, try an older one
        failed.append((s, f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"))
        continue
      if failed:
        checkpoints.set_aside([s for s, _ in failed])
        checkpoints.skipped = failed
      return out
    raise TrainingError(f"no checkpoint in {checkpoints.directory} can be restored ("
                        + "; ".join(f"step {s}: {why}" for s, why in failed) + "). If the config changed since "
                        "they were written, restore it; or start afresh with --config.resume=False (or a new workdir)")
  if step == "best":
    found = checkpoints.best_step()
    if found is None:
      raise TrainingError(f"no best checkpoint in {checkpoints.directory}")
    step = found
  return _restore_step(checkpoints, int(step), state, shardings, with_data=with_data)


def _restore_step(checkpoints: RunCheckpoints, step: int, state: TrainState, shardings: Any, *,
                  with_data: bool) -> tuple[TrainState, dict | None, int]:
  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  saved, data_state = checkpoints.restore(int(step), abstract_with_shardings(abstract, shardings),
                                          with_data=with_data)
  state = state.replace(step=saved["step"], trainable=saved["trainable"], opt_state=saved["opt_state"],
                        rng=saved["rng"])
  return state, data_state, int(step)


# ---- data, evaluation and export ---------------------------------------------------------------------------

def evaluate_dataset(fn: Callable[[dict], dict], dataset: Iterable[dict]) -> dict[str, float]:
  """Σ over one pass of `dataset` of every scalar `fn(batch)` returns (callers divide: the sums keep the
  token- or pair-weighting exact, whatever the batch sizes). Used by validation, perplexity and DPO.

  With several processes, each reads its own shard, and shards may pack into different numbers of batches;
  `fn` is a collective, so every process runs it until all are out of batches, feeding all-zero batches
  (loss mask 0: they add nothing to any sum) once its own shard has ended."""
  if jax.process_count() == 1:
    sums: dict[str, float] = {}
    for batch in dataset:
      _add(sums, fn(batch))
    return sums
  sums, it, template = {}, iter(dataset), None
  while True:
    batch = next(it, None)
    if batch is not None and template is None:
      template = jax.tree_util.tree_map(np.zeros_like, batch)
    has = multihost_utils.process_allgather(np.array([batch is not None, template is not None], np.int32))
    if not has[:, 0].any():
      return sums
    empty = [i for i, (b, t) in enumerate(has) if not b and not t]
    if empty:  # every process raises, so none waits in a collective for it
      raise TrainingError(f"process(es) {empty} have no validation batch at all while others have: add "
                          "validation data or lower data.batch_size")
    batch = template if batch is None else batch
    _add(sums, fn(batch))


def _add(sums: dict, out: dict) -> None:
  for k, v in to_host(out).items():
    sums[k] = sums.get(k, 0.0) + float(v)


def export_state(workdir: str, state: TrainState, model_cfg: LlamaConfig, tokenizer, *,
                 lora_config: LoraConfig | None, base_dir: str | None, extra: dict | None = None) -> str:
  """Write WORKDIR/model from `state`: the adapter plus a reference to `base_dir` (LoRA), or full weights.
  Every process gathers (collective); process 0 writes."""
  out = os.path.join(workdir, "model")
  trainable = to_host(state.trainable)
  extra = {"trained_steps": int(to_host(state.step)), **(extra or {})}
  if jax.process_index() != 0:
    return out
  cfg = model_cfg.replace(remat=False)
  if lora_config is not None:
    save_model(out, cfg, lora=trainable["lora"], lora_config=lora_config, base=base_dir, tokenizer=tokenizer,
               overwrite=True, extra=extra)
  else:
    save_model(out, cfg, params=trainable["params"], tokenizer=tokenizer, overwrite=True, extra=extra)
  return out


def write_run_config(run: RunSettings, workdir: str, model_cfg: LlamaConfig, total_steps: int,
                     per_epoch: int) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"config": run.config_dict(), "model": model_cfg.to_dict(), "total_steps": total_steps,
               "batches_per_epoch": per_epoch}, f, indent=1, ensure_ascii=False)
