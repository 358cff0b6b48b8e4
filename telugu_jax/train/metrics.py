"""Run logs: one JSON line per logged step (WORKDIR/metrics.jsonl), TensorBoard events, a progress bar.

MFU = achieved FLOP/s / peak FLOP/s, with the FLOPs per token written out:
  matmuls:   2 * N_matmul per token forward, and twice that backward (activation + weight gradients),
             so 6 * N for full fine-tuning; LoRA skips the frozen weights' gradients: ~4 * N
             (+ 6 * N_lora, negligible);
  attention: 2 * 2 * n_layers * L * n_heads * head_dim per token forward (QK^T and AV over L keys; causal
             masking is not subtracted, as in the PaLM convention), times 3 with the backward pass.
N_matmul excludes the embedding lookup (a gather, no FLOPs) but includes the output projection.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, by device kind (for MFU when train.peak_tflops is 0).
_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12, "L4": 121e12, "TPU v5": 197e12,
          "TPU v4": 275e12}


def peak_flops(configured_tflops: float = 0.0) -> float | None:
  """Peak FLOP/s of all devices together, or None when unknown (CPU)."""
  if configured_tflops:
    return configured_tflops * 1e12 * jax.device_count()
  kind = jax.devices()[0].device_kind
  for name, peak in _PEAKS.items():
    if name in kind:
      return peak * jax.device_count()
  return None


def flops_per_token(cfg, seq_len: int, mode: str = "full") -> float:
  d, h = cfg.d_model, cfg.head_dim
  per_layer = d * h * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * h * d + 3 * d * cfg.ffn_dim
  n_matmul = cfg.n_layers * per_layer + cfg.vocab_size * d
  attn_fwd = 2 * 2 * cfg.n_layers * seq_len * cfg.n_heads * h
  factor = 6 if mode == "full" else 4
  return factor * n_matmul + 3 * attn_fwd


def _drop_rows_after(path: str, step: int) -> None:
  """Keep only the rows of steps <= `step` (atomically), so each step is logged once across a resume."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        keep.append(line if line.endswith("\n") else line + "\n")
    except (ValueError, KeyError, TypeError):
      continue   # a line cut by a kill: the redone step writes it again
  if len(keep) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(path + ".tmp", path)


class MetricsLogger:
  def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0, console: bool = True,
               peak_flops: float | None = None, flops_per_token: float = 0.0):
    self.is_main = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.peak, self.fpt = peak_flops, flops_per_token
    self.console = console and self.is_main
    self._tokens = self._loss_tokens = self._steps = 0
    self._t_last = time.perf_counter()
    self.empty_batches = 0
    self.tb = None
    self.bar = None
    if self.is_main:
      _drop_rows_after(self.path, start_step)   # a resumed run redoes the steps after its checkpoint
      self.file = open(self.path, "a")
      try:
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:  # optional: JSON lines are the source of truth
        self.tb = None
      if self.console:
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

  def info(self, msg: str) -> None:
    if self.is_main:
      (self.bar.write if self.bar else print)(msg)

  def count_tokens(self, real: int, loss_tokens: int) -> None:
    self._tokens += real
    self._loss_tokens += loss_tokens
    self._steps += 1
    if self.bar:
      self.bar.update(1)

  def warn_empty_batch(self, step: int) -> None:
    self.empty_batches += 1
    self.info(f"warning: batch at step {step} has no loss tokens (all-zero loss mask); it adds no gradient")

  def log_train(self, step: int, metrics: dict) -> dict:
    """Throughput is measured between log steps (dispatch is asynchronous: one step's wall time means little)."""
    self.count_tokens(int(metrics["real_tokens"]), int(metrics["loss_tokens"]))
    now = time.perf_counter()
    elapsed = max(now - self._t_last, 1e-9)
    rec = {"step": step, **{k: float(v) for k, v in metrics.items()}, "tokens_per_s": self._tokens / elapsed,
           "loss_tokens_per_s": self._loss_tokens / elapsed, "step_time_s": elapsed / max(self._steps, 1),
           "empty_batches": self.empty_batches}
    if self.peak:
      rec["mfu"] = rec["tokens_per_s"] * self.fpt / self.peak
    self._tokens = self._loss_tokens = self._steps = 0
    self._t_last = now
    self._write(rec)
    if self.bar:
      self.bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec.get('lr', 0):.2e}",
                           tok_s=f"{rec['tokens_per_s']:.0f}")
    return rec

  def log_eval(self, step: int, metrics: dict) -> None:
    rec = {"step": step, **{k: float(v) for k, v in metrics.items()}}
    self._write(rec)
    extra = "".join(f", {k} {rec[k]:.4f}" for k in ("val_ppl", "val_reward_accuracy", "val_reward_margin") if k in rec)
    self.info(f"step {step}: val_loss {rec['val_loss']:.4f}{extra}")

  def _write(self, rec: dict) -> None:
    if not self.is_main:
      return
    self.file.write(json.dumps(rec) + "\n")
    self.file.flush()
    if self.tb:
      for k, v in rec.items():
        if k != "step" and np.isfinite(v):
          self.tb.add_scalar(k, v, rec["step"])

  def close(self) -> None:
    if self.is_main:
      self.file.close()
      if self.tb:
        self.tb.close()
      if self.bar:
        self.bar.close()
