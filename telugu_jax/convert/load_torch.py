"""Read PyTorch checkpoints tensor by tensor, without running code from them.

Every reader offers `names()`, `shape(name)`, `dtype(name)` and `get(name) -> np.ndarray`, and loads a
tensor only when asked, so a conversion holds about one copy of the model:
  - safetensors (one file or shards): each tensor is read from its byte range on demand (see
    `SafetensorsReader` for why not `safe_open`); bfloat16 goes straight into an `ml_dtypes` array.
  - pickles (`.bin`/`.pt`/`.pth`): `torch.load(weights_only=True, mmap=True)`; `weights_only` refuses
    anything but tensors and plain containers, `mmap` leaves tensor data on disk until it is read.
  - Meta's model-parallel shards (`consolidated.NN.pth`): the tensor's pieces are concatenated on read.

bfloat16 tensors come out as `ml_dtypes.bfloat16` arrays (JAX's numpy bfloat16) with the same bits.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence

import ml_dtypes
import numpy as np

from telugu_jax.convert.errors import ConversionError, UnsafeCheckpointError

# Keys under which training scripts commonly nest the model's state dict (`{"model": sd, "optimizer": ...}`).
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module", "weights", "params")
# Prefixes wrappers add to every name: DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
_SAFETENSORS_NUMPY = {"F32": np.dtype("<f4"), "BF16": np.dtype(ml_dtypes.bfloat16), "F16": np.dtype("<f2"),
                      "F64": np.dtype("<f8")}


def torch_to_numpy(t) -> np.ndarray:
  """A CPU torch tensor as numpy, bit-exact; bfloat16 via an int16 view (numpy cannot hold torch bf16)."""
  import torch

  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  if t.dtype not in (torch.float32, torch.float16, torch.float64):
    raise ConversionError(f"tensor dtype {t.dtype} is not supported (float32, bfloat16, float16 are)")
  return t.numpy()


def numpy_to_torch(x: np.ndarray):
  """The inverse of `torch_to_numpy` (shares memory where it can)."""
  import torch

  x = np.ascontiguousarray(x)
  with warnings.catch_warnings():  # arrays restored by Orbax are read-only; the tensors are only read
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    if x.dtype == ml_dtypes.bfloat16:
      return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


class SafetensorsReader:
  """One or more safetensors files (shards); names may live in any of them.

  Tensors are read with plain file reads rather than `safetensors.safe_open`: safe_open memory-maps the
  file, and every page read stays in the process's resident set until the file is closed, which doubled
  the measured peak RSS of converting the 300M preset (+1.5 GB). The format is simple enough to read
  directly: an 8-byte little-endian header length, a JSON header `{name: {dtype, shape, data_offsets}}`,
  then the raw little-endian bytes.
  """

  def __init__(self, files: Sequence[str | os.PathLike]):
    self._where: dict[str, tuple[str, str, tuple[int, ...], int, int]] = {}
    for file in map(os.fspath, files):
      size = os.path.getsize(file)
      with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
          if not 2 <= n <= size - 8:
            raise ValueError(f"header length {n} does not fit a file of {size} bytes")
          header = json.loads(f.read(n))
        except ValueError as e:
          raise ConversionError(f"{file} is not a valid safetensors file ({e})") from None
      for name, info in header.items():
        if name == "__metadata__":
          continue
        if name in self._where:
          raise ConversionError(f"tensor {name!r} appears in more than one shard (second: {file})")
        begin, end = (8 + n + o for o in info["data_offsets"])
        if end > size:
          raise ConversionError(f"{file} is truncated: tensor {name!r} ends past the end of the file")
        self._where[name] = (file, info["dtype"], tuple(info["shape"]), begin, end)

  def names(self) -> list[str]:
    return list(self._where)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._where[name][2]

  def dtype(self, name: str) -> str:
    return _SAFETENSORS_DTYPES.get(self._where[name][1], self._where[name][1])

  def sort_key(self, name: str) -> tuple:
    file, _, _, begin, _ = self._where[name]
    return file, begin

  def get(self, name: str) -> np.ndarray:
    file, code, shape, begin, end = self._where[name]
    if code not in _SAFETENSORS_NUMPY:
      raise ConversionError(f"tensor {name!r} has dtype {code}; float32, bfloat16 and float16 are supported")
    out = np.empty(shape, _SAFETENSORS_NUMPY[code])
    if out.nbytes != end - begin:
      raise ConversionError(f"{file}: tensor {name!r} has {end - begin} bytes, its shape {list(shape)} needs "
                            f"{out.nbytes}")
    with open(file, "rb") as f:
      f.seek(begin)
      if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
        raise ConversionError(f"{file} is truncated at tensor {name!r}")
    return out

  def close(self) -> None:
    pass


def load_pickle(path: str | os.PathLike):
  """`torch.load` with `weights_only=True` (and `mmap` when the file format allows it)."""
  import torch

  path = os.fspath(path)
  try:
    try:
      return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
      if "mmap" not in str(e) and "zip" not in str(e):
        raise
      return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
  except pickle.UnpicklingError as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    first = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0]).split(". Please")[0]
    raise UnsafeCheckpointError(
        f"refusing to load {path}: it holds objects other than tensors and plain containers, and telugu-jax "
        f"never runs code from a checkpoint (torch.load weights_only=True said: {first}). Re-save the weights "
        "alone: torch.save(model.state_dict(), path), or safetensors.torch.save_file(...).") from None
  except (OSError, EOFError) as e:
    raise ConversionError(f"cannot read {path}: {e}") from None


def _is_tensor_dict(obj) -> bool:
  import torch

  return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj, path: str = "", notes: list[str] | None = None) -> dict:
  """The tensors of a loaded pickle: the object itself, or the state dict nested under a usual key
  (which key, and what else the file held, is added to `notes`)."""
  import torch

  if _is_tensor_dict(obj):
    return dict(obj)
  if isinstance(obj, Mapping):
    for key in STATE_DICT_KEYS:
      if key in obj and _is_tensor_dict(obj[key]):
        if notes is not None:
          others = sorted(str(k) for k in obj if k != key)
          notes.append(f"using the state dict under {key!r} in {os.path.basename(path)}"
                       + (f" (also there, not converted: {others})" if others else ""))
        return dict(obj[key])
    # A state dict with a few non-tensor entries (e.g. `_metadata`, a step count) mixed in.
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(isinstance(v, int | float | str) or v is None
                       for k, v in obj.items() if k not in tensors):
      return tensors
  found = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
  raise ConversionError(
      f"{path}: no state dict found (found {found}). Expected a dict of tensors, or one nested under one of "
      f"{list(STATE_DICT_KEYS)}; save with torch.save({{'model': model.state_dict()}}, path).")


def strip_wrapper_prefixes(state_dict: dict) -> tuple[dict, list[str]]:
  """Drop a prefix that every name shares (`module.` from DDP, `_orig_mod.` from torch.compile)."""
  stripped = []
  changed = True
  while changed:
    changed = False
    for prefix in WRAPPER_PREFIXES:
      if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
        stripped.append(prefix)
        changed = True
  return state_dict, stripped


class TensorDictReader:
  """Tensors opened (memory-mapped) from one or more pickles. `get` hands each tensor over once and drops
  the reader's reference, so a shard's mapping is released once all its tensors have been read."""

  def __init__(self, shards: Sequence[Mapping]):
    self._shards = [dict(s) for s in shards]
    self._where = {name: i for i, shard in enumerate(self._shards) for name in shard}
    self._order = {name: k for k, name in enumerate(self._where)}

  @classmethod
  def from_files(cls, files: Sequence[str | os.PathLike]) -> TensorDictReader:
    shards, seen = [], set()
    for file in files:
      sd = find_state_dict(load_pickle(file), os.fspath(file))
      dup = set(sd) & seen
      if dup:
        raise ConversionError(f"tensors {sorted(dup)[:3]} appear in more than one shard (second: {file})")
      seen |= set(sd)
      shards.append(sd)
    return cls(shards)

  def names(self) -> list[str]:
    return list(self._where)

  def _tensor(self, name: str):
    return self._shards[self._where[name]][name]

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._tensor(name).shape)

  def dtype(self, name: str) -> str:
    return str(self._tensor(name).dtype).removeprefix("torch.")

  def sort_key(self, name: str) -> tuple:
    return self._where[name], self._order[name]

  def get(self, name: str) -> np.ndarray:
    return torch_to_numpy(self._shards[self._where[name]].pop(name))

  def close(self) -> None:
    self._shards.clear()


# Meta's model-parallel split, by tensor (reference llama code: ColumnParallelLinear splits the output
# rows, RowParallelLinear the input columns; norms are replicated; the embedding is split along the model
# dimension in Llama 1/2 and along the vocabulary in Llama 3, told apart by its shape).
_META_ROW_SPLIT = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3", "output")
_META_COL_SPLIT = ("attention.wo", "feed_forward.w2")


class MetaShardsReader:
  """`consolidated.NN.pth` shards presented as one checkpoint."""

  def __init__(self, files: Sequence[str | os.PathLike], dim: int):
    self._shards = [find_state_dict(load_pickle(f), os.fspath(f)) for f in files]
    self._dim = dim
    names = set(self._shards[0])
    for f, s in zip(files, self._shards, strict=True):
      if set(s) != names:
        raise ConversionError(f"Meta shard {f} holds other tensor names than {files[0]}")

  def names(self) -> list[str]:
    return list(self._shards[0])

  def _axis(self, name: str) -> int | None:
    if len(self._shards) == 1 or name.endswith("norm.weight") or name == "rope.freqs":
      return None
    if name == "tok_embeddings.weight":
      return 0 if self._shards[0][name].shape[1] == self._dim else 1
    if any(name.endswith(s + ".weight") for s in _META_ROW_SPLIT):
      return 0
    if any(name.endswith(s + ".weight") for s in _META_COL_SPLIT):
      return 1
    raise ConversionError(f"do not know how tensor {name!r} is split across Meta shards")

  def shape(self, name: str) -> tuple[int, ...]:
    shape = list(self._shards[0][name].shape)
    axis = self._axis(name)
    if axis is not None:
      shape[axis] = sum(s[name].shape[axis] for s in self._shards)
    return tuple(shape)

  def dtype(self, name: str) -> str:
    return str(self._shards[0][name].dtype).removeprefix("torch.")

  def get(self, name: str) -> np.ndarray:
    """The whole tensor (each name is read once; the shards' references are dropped)."""
    axis = self._axis(name)
    pieces = [torch_to_numpy(s.pop(name)) for s in self._shards]
    return pieces[0] if axis is None else np.concatenate(pieces, axis=axis)

  def close(self) -> None:
    self._shards.clear()


def read_index(path: str | os.PathLike) -> list[str]:
  """Shard files named by a `*.index.json` (HF sharded checkpoints), checked to exist."""
  with open(path) as f:
    weight_map = json.load(f).get("weight_map")
  if not isinstance(weight_map, Mapping) or not weight_map:
    raise ConversionError(f"{path} has no weight_map; it is not a Hugging Face shard index")
  folder = os.path.dirname(os.fspath(path))
  files = [os.path.join(folder, f) for f in dict.fromkeys(weight_map.values())]
  absent = [f for f in files if not os.path.isfile(f)]
  if absent:
    raise ConversionError(f"{path} names shard files that are missing: {[os.path.basename(f) for f in absent]}")
  return files
