"""Device mesh and partition rules: one code path for 1 device, N devices and N hosts.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters and optimiser state sharded),
`tensor` (model parallel inside a matmul). Rules map a parameter's path to a PartitionSpec; a dimension
that the mesh axis does not divide is replicated instead (tiny test models have odd sizes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from telugu_jax.train.optim import path_str

AXES = ("data", "fsdp", "tensor")

# (path regex, spec for the leaf's dims). First match wins; the default is replication.
RULES: tuple[tuple[str, tuple], ...] = (
    (r"embed_tokens/embedding$", ("tensor", "fsdp")),                       # [V, D]
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel$", ("fsdp", "tensor")),  # [D, F]
    (r"(o_proj|down_proj)/kernel$", ("tensor", "fsdp")),                     # [F, D]
    (r"(^|/)lm_head$", ("fsdp", "tensor")),                                  # [D, V]
    (r"lora_a$", ("fsdp", None)),                                            # [in, r]
    (r"lora_b$", (None, "fsdp")),                                            # [r, out]
)

BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed() -> bool:
  """Join a multi-process job when the environment describes one; call it before any other JAX call.

  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID are read here and
  passed on, because `jax.distributed.initialize()` reads no process count or id from the environment outside
  the clusters it detects. Without a coordinator address, a detected cluster (Slurm with more than one task,
  Open MPI, Kubernetes JobSet) initialises through JAX's own auto-detection. Returns whether this is a
  multi-process run. Idempotent.
  """
  if jax.distributed.is_initialized():
    return True
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    n, pid = env.get("JAX_NUM_PROCESSES"), env.get("JAX_PROCESS_ID")
    try:
      jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                 num_processes=int(n) if n else None, process_id=int(pid) if pid else None)
    except ValueError as e:
      raise ValueError(f"{e}; set JAX_NUM_PROCESSES and JAX_PROCESS_ID beside JAX_COORDINATOR_ADDRESS on every "
                       "host (README: Training on several hosts)") from None
    return True
  if multiprocess_env(env):
    jax.distributed.initialize()
    return True
  return False


def multiprocess_env(env=None) -> bool:
  """Whether the environment describes a multi-process job: a coordinator address, or a cluster JAX detects
  (Slurm with more than one task, Open MPI, Kubernetes JobSet). Read without starting JAX."""
  env = os.environ if env is None else env
  return bool(env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("SLURM_NTASKS", "1")) > 1
              or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1 or env.get("JOBSET_NAME"))


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  missing = set(range(jax.process_count())) - {d.process_index for d in devices.flat}
  if missing:
    raise ValueError(f"the mesh's {devices.size} devices leave out process(es) {sorted(missing)}: every process "
                     "feeds its rows to its own devices, so the mesh must hold devices of every process "
                     "(mesh.devices=0 takes them all)")
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape {shape} must have 3 entries for axes {AXES}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if devices.size % known:
      raise ValueError(f"mesh shape {shape} does not divide {devices.size} devices")
    shape[shape.index(-1)] = devices.size // known
  if int(np.prod(shape)) != devices.size:
    raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, {devices.size} available")
  return Mesh(devices.reshape(shape), AXES)


def spec_for(path: str, shape: Sequence[int], mesh: Mesh) -> P:
  for pattern, axes in RULES:
    if re.search(pattern, path) and len(axes) == len(shape):
      dims = [a if a is None or dim % mesh.shape[a] == 0 else None for a, dim in zip(axes, shape, strict=True)]
      return P(*dims)
  return P()


def tree_shardings(tree, mesh: Mesh):
  """NamedShardings for every leaf of a (possibly abstract) pytree, by path."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: NamedSharding(mesh, spec_for(path_str(p), getattr(x, "shape", ()), mesh)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy rows -> global arrays sharded along the batch axes (works on 1 or many hosts)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
