"""How a training run uses a CPU: the XLA settings that must be chosen before JAX starts its backend.

Out of the box, XLA:CPU runs one device whose matmuls share one thread pool. Measured on the `demo` LoRA
step (2 cores, docs/benchmarks.md), three changes together give 1.6-1.7x that:
  - one XLA device per core, the batch split across them (data parallel), each device running its ops on
    its own thread (`--xla_cpu_multi_thread_eigen=false`) instead of all of them queueing on a shared pool;
  - XLA:CPU's YNNPACK fusion of element-wise ops (`--xla_cpu_experimental_ynn_fusion_type=+eltwise`), which
    removes most of the transposed-layout copies of the backward pass. The flag is experimental: an XLA
    build that does not know it refuses to start, so it is only passed when this jaxlib has it;
  - causal attention in query blocks (`train.attention_block=-1`, resolved in train/core.py).

`python -m telugu_jax.train` calls `apply(run)` first thing, before any JAX computation; importing the
library sets nothing. A user who sets XLA_FLAGS (even to an empty string) keeps exactly that, and
TELUGU_JAX_CPU_RECIPE=0 turns the recipe off. Accelerators are untouched: the recipe is only applied when
JAX_PLATFORMS names the CPU or no accelerator plugin is installed.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import importlib.util
import mmap
import os
import pkgutil

EIGEN_OFF = "--xla_cpu_multi_thread_eigen=false"
YNN_ELTWISE = "--xla_cpu_experimental_ynn_fusion_type=+eltwise"
CPU_ATTENTION_BLOCK = 32


@dataclasses.dataclass(frozen=True)
class CpuPlan:
  """What the recipe sets: the XLA device count and flags, the mesh when it changes, a line for the log."""

  devices: int
  flags: tuple[str, ...]
  why: str
  mesh_shape: tuple[int, ...] | None = None   # None: the config's

  @property
  def xla_flags(self) -> str:
    parts = list(self.flags)
    if self.devices > 1:
      parts.insert(0, f"--xla_force_host_platform_device_count={self.devices}")
    return " ".join(parts)


def cores() -> int:
  """CPU cores this process may run on (its affinity mask, which container CPU sets restrict)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS has no affinity mask
    return os.cpu_count() or 1


def memory_bytes() -> int:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return 0


DEFAULT_MESH = (1, -1, 1)
DATA_PARALLEL = (-1, 1, 1)


# Peak resident memory YNNPACK's fusion adds, per byte of float32 weights: the 300m LoRA step (1.34 GB of weights,
# batch 1 x 256) peaked at 20.1 GB with it and 5.0 GB without (jaxlib 0.10.2); the 5M demo step at 1.45 vs 1.58 GB.
YNN_BYTES_PER_WEIGHT_BYTE = 12


def plan(batch_sizes: tuple[int, ...], mesh_shape: tuple[int, ...], mesh_devices: int, n_cores: int, ynn: bool,
         replica_bytes: int = 0, memory: int = 0, weight_bytes: int = 0) -> CpuPlan:
  """The recipe for a run whose global (micro)batches are `batch_sizes` on `n_cores` cores.

  One device per core, data parallel, only when every batch splits evenly over the cores, the config leaves
  the mesh at its default, and a copy of the training state per core (`replica_bytes` each) takes at most a
  quarter of `memory`. Otherwise one device keeps the shared thread pool: a many-core machine is never left
  running a few single-threaded devices, and a big model is not copied once per core.

  Why data parallel and not the default FSDP mesh: CPU devices share one memory, so sharding the weights over
  them saves nothing that replication costs beyond the copies counted above, while the all-gathers cost time;
  and XLA:CPU's YNNPACK fusion rejects a layout the FSDP step produces ("unsupported layout in YNN fusion",
  jaxlib 0.10.2, the demo LoRA step).

  YNNPACK's fusion is left out when `weight_bytes` (the model's float32 weights) times
  YNN_BYTES_PER_WEIGHT_BYTE exceeds a quarter of `memory`."""
  if ynn and memory and weight_bytes * YNN_BYTES_PER_WEIGHT_BYTE > memory // 4:
    ynn = False   # a big model: YNNPACK's working copies of the weights would not fit beside the run
  flags = (YNN_ELTWISE,) if ynn else ()
  if n_cores < 2:
    return CpuPlan(1, flags, "1 core: one device")
  if mesh_devices != 0 or tuple(mesh_shape) != DEFAULT_MESH:
    return CpuPlan(1, flags, f"mesh set in the config (shape {tuple(mesh_shape)}, devices {mesh_devices}): "
                   f"one device on all {n_cores} cores")
  uneven = [b for b in batch_sizes if b % n_cores]
  if uneven:
    return CpuPlan(1, flags, f"batch {uneven[0]} does not split over {n_cores} cores: one device on all of them")
  if memory and replica_bytes * n_cores > memory // 4:
    return CpuPlan(1, flags, f"{n_cores} copies of the training state ({replica_bytes / 2**30:.1f} GiB each) "
                   f"would take over a quarter of the memory: one device on all {n_cores} cores")
  return CpuPlan(n_cores, (EIGEN_OFF, *flags), f"one device per core ({n_cores}), the batch split across them",
                 mesh_shape=DATA_PARALLEL)


def cpu_only() -> bool:
  """Whether JAX will run on the CPU, decided without starting a backend (after that, flags are ignored)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  if importlib.util.find_spec("libtpu") is not None:
    return False
  if importlib.util.find_spec("jax_plugins") is not None:
    import jax_plugins  # namespace package of the CUDA/ROCm plugins

    if any(True for _ in pkgutil.iter_modules(jax_plugins.__path__)):
      return False
  return not list(importlib.metadata.entry_points(group="jax_plugins"))


def has_xla_flag(name: str) -> bool:
  """Whether this jaxlib's XLA knows flag `name`: its name is in the flag table of the shared library (an
  unknown flag in XLA_FLAGS makes the backend abort, so this is checked before passing it)."""
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return False
  needle = name.lstrip("-").split("=")[0].encode()
  for folder in spec.submodule_search_locations:
    for path in glob.glob(os.path.join(folder, "*.so")):
      try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
          if m.find(needle) >= 0:
            return True
      except (OSError, ValueError):
        continue
  return False


def plan_for(run) -> CpuPlan:
  """The recipe for a run (RunSettings) on this machine: what `apply` sets, and what the benchmark measures."""
  state, weights = run_sizes(run)
  return plan((run.data.batch_size // run.train.grad_accum,), tuple(run.mesh.shape), run.mesh.devices, cores(),
              has_xla_flag(YNN_ELTWISE), state, memory_bytes(), weights)


def apply(run) -> CpuPlan | None:
  """Set XLA_FLAGS for a CPU training run (before JAX starts its backend); None when left alone."""
  from telugu_jax.train.sharding import multiprocess_env

  if "XLA_FLAGS" in os.environ or os.environ.get("TELUGU_JAX_CPU_RECIPE", "1") == "0":
    return None
  if multiprocess_env() or not cpu_only():
    return None
  p = plan_for(run)
  os.environ["XLA_FLAGS"] = p.xla_flags
  return p


def state_bytes(n_params: int, mode: str, frozen_dtype: str) -> int:
  """About how many bytes one copy of a training state takes: full fine-tuning keeps weights, gradients and two
  AdamW moments in float32; LoRA keeps the frozen base (its adapter is small)."""
  return 16 * n_params if mode == "full" else n_params * (2 if frozen_dtype in ("bfloat16", "float16") else 4)


def run_sizes(run) -> tuple[int, int]:
  """(bytes of one copy of `run`'s training state, bytes of its weights in float32); zeros when it cannot tell
  (RunSettings; a missing or odd base is reported by the trainer itself, with its fix)."""
  from telugu_jax.model import LlamaConfig
  from telugu_jax.model.io import read_meta

  try:
    cfg = (LlamaConfig.from_dict(read_meta(run.base)["model"]) if run.base
           else LlamaConfig.preset(run.model.preset, **dict(run.model.overrides)))
  except Exception:  # noqa: BLE001
    return 0, 0
  n = cfg.num_params()
  return state_bytes(n, run.mode, run.train.frozen_dtype), 4 * n
