"""Orbax checkpoints of a run: train state + data-iterator state in one step directory.

Retention keeps the latest `keep_latest` steps *and* the `keep_best` steps with the lowest validation
loss. (With orbax-checkpoint 0.12, `best_fn` + `max_to_keep` deletes the newest step at once, and
BestN's default order keeps the *highest* metric; a preservation policy combining LatestN and
BestN(reverse=True) does what we mean. tests/train/test_checkpoint.py checks which steps survive.)

A LoRA run's state holds only the adapter (and its optimiser state): the frozen base is a reference
in the run config, never copied. Tools that need weights only restore `state` and skip the iterator.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm


def _metric(metrics: Any) -> float:
  return float(metrics["val_loss"])


class RunCheckpoints:
  def __init__(self, directory: str, *, keep_latest: int = 2, keep_best: int = 1, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    policies = [cm.LatestN(n=keep_latest)]
    if keep_best:
      policies.append(cm.BestN(get_metric_fn=_metric, reverse=True, n=keep_best,
                               keep_checkpoints_without_metrics=False))
    # best_fn is set as well, only because Orbax writes a step's metrics to disk (and so knows them
    # after a restart) only when it is; without that, BestN would forget every old step's metric on
    # resume and delete the best checkpoint. Retention itself is decided by the preservation policy.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies), enable_async_checkpointing=async_save,
        best_fn=_metric if keep_best else None, best_mode="min", create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
    self.skipped: list[tuple[int, str]] = []   # (step, why) of checkpoints a resume could not restore

  def set_aside(self, steps: list[int]) -> str:
    """Move damaged steps to DIRECTORY-skipped/ (process 0; kept for inspection, never deleted), so the run can
    write those steps again; returns that folder."""
    aside = self.directory + "-skipped"
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        dst = os.path.join(aside, str(step))
        while os.path.exists(dst):
          dst += "+"
        os.replace(os.path.join(self.directory, str(step)), dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("telugu_jax.checkpoint.set_aside")
    self.manager.reload()
    return aside

  def save(self, step: int, state: Any, data_state: dict | None, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Every process calls it. `data_state` is this process's iterator state: each process reads its own
    shard, so the checkpoint keeps all of them (gathered; process 0 writes) and each resumes at its own."""
    args = {"state": ocp.args.StandardSave(_state_tree(state))}
    if data_state is not None:
      args["data"] = ocp.args.JsonSave({"process_states": gather_json(data_state)})
    return self.manager.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=force)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def restore(self, step: int, abstract_state: Any, *, with_data: bool = True) -> tuple[Any, dict | None]:
    """Restore onto the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct with sharding),
    so a run can resume on a different number of devices."""
    args = {"state": ocp.args.StandardRestore(_state_tree(abstract_state))}
    if with_data and self._has_item(step, "data"):
      args["data"] = ocp.args.JsonRestore()
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    data = out["data"] if "data" in args else None
    if data is not None and "process_states" in data:
      states = data["process_states"]
      # Written by another number of processes: the shards differ, no position carries over.
      data = states[jax.process_index()] if len(states) == jax.process_count() else None
    return out["state"], data

  def _has_item(self, step: int, name: str) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), name))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def gather_json(obj: Any) -> list:
  """[obj of process 0, obj of process 1, ...] on every process (a collective when there are several)."""
  if jax.process_count() == 1:
    return [obj]
  raw = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([raw.size], np.int64)).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: raw.size] = raw
  rows = multihost_utils.process_allgather(padded).reshape(len(sizes), -1)
  return [json.loads(bytes(r[:n]).decode("utf-8")) for r, n in zip(rows, sizes, strict=True)]


def _state_tree(state: Any) -> dict:
  """TrainState as a plain dict (Orbax stores dicts most portably)."""
  if isinstance(state, dict):
    return state
  return {"step": state.step, "trainable": state.trainable, "opt_state": state.opt_state, "rng": state.rng}


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
