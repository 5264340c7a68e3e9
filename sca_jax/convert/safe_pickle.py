"""Reads PyTorch pickles without torch and without running anything in them.

Official NVlabs network pickles (`pickle.dump` of a dict of
`torch_utils.persistence` objects) and `torch.save` zip archives are read by
a restricted unpickler that resolves only an exact allowlist of globals, each
to an inert replacement defined here:

* persistent network objects become `PersistentRecord`s (class name, init
  arguments and state); their embedded source code is hashed, never run,
  and never written out;
* tensors become NumPy arrays rebuilt from raw storage bytes, bounds-checked.

Anything else (e.g. `os.system`) raises `UnsafePickleError` before it can be
called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# torch.serialization's legacy format markers.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references something outside the allowlist, or is malformed."""


@dataclasses.dataclass
class PersistentRecord:
  """What a `torch_utils.persistence` object pickles, minus its source code.

  `state` is the object's `__dict__`: `_parameters`, `_buffers` and
  `_modules` plus plain attributes, with tensors as NumPy arrays and
  sub-networks as further records.
  """
  class_name: str
  init_args: tuple
  init_kwargs: dict
  state: dict
  module_src_sha256: str  # identifies the code that built it; never run

  def __setstate__(self, state: Any) -> None:
    # copy.copy/deepcopy fill a blank instance. A pickle can only reach
    # records made whole by _reconstruct_persistent_obj: refuse its BUILD.
    if self.__dict__ or not isinstance(state, dict):
      raise UnsafePickleError("a pickle tried to set state on a record")
    self.__dict__.update(state)

  def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
    """Parameters and buffers by dotted name, as torch's `state_dict()`."""
    out: dict[str, np.ndarray] = {}
    skip = self.state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
      for name, value in (self.state.get(group) or {}).items():
        if value is not None and not (group == "_buffers" and name in skip):
          out[prefix + name] = value
    for name, sub in (self.state.get("_modules") or {}).items():
      if isinstance(sub, PersistentRecord):
        out.update(sub.state_dict(f"{prefix}{name}."))
      elif sub is not None:
        raise UnsafePickleError(
            f"submodule {prefix}{name} is a {type(sub).__name__}, not a "
            "persistent object")
    return out


class AttrDict(dict):
  """Stands in for `dnnlib.util.EasyDict` (a dict with attribute access)."""

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for `torch.FloatStorage` etc.; not callable."""
  name: str
  dtype: np.dtype


class _Storage:
  """A flat typed buffer; filled once its raw bytes have been read."""

  def __init__(self, storage_type: _StorageType, key: str):
    self.storage_type, self.key = storage_type, key
    self.array: np.ndarray | None = None

  def __setstate__(self, state: Any) -> None:
    raise UnsafePickleError("a pickle tried to set state on a storage")

  def fill(self, raw: bytes) -> None:
    itemsize = self.storage_type.dtype.itemsize
    if len(raw) % itemsize:
      raise UnsafePickleError(
          f"storage {self.key}: {len(raw)} bytes is not a whole number of "
          f"{self.storage_type.name} items")
    self.array = np.frombuffer(raw, self.storage_type.dtype)


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dtype).newbyteorder("<"))
    for name, dtype in [
        ("FloatStorage", np.float32), ("HalfStorage", np.float16),
        ("DoubleStorage", np.float64), ("LongStorage", np.int64),
        ("IntStorage", np.int32), ("ByteStorage", np.uint8),
        ("BoolStorage", np.bool_)]
}


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any,
                       stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None,
                       metadata: Any = None) -> np.ndarray:
  """torch._utils._rebuild_tensor_v2 -> a NumPy copy of the strided view."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage) or storage.array is None:
    raise UnsafePickleError("tensor without a loaded storage")
  if not (isinstance(storage_offset, int) and storage_offset >= 0 and
          all(isinstance(v, int) and v >= 0 for v in (*size, *stride))
          and len(size) == len(stride)):
    raise UnsafePickleError(f"bad tensor geometry: offset {storage_offset!r}, "
                            f"size {size!r}, stride {stride!r}")
  flat = storage.array
  if 0 in size:
    return np.zeros(tuple(size), flat.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  # as_strided reads any memory it is told to: check the view fits first.
  if last >= flat.size:
    raise UnsafePickleError(f"tensor of size {tuple(size)} reads element "
                            f"{last} of a {flat.size}-element storage")
  view = np.lib.stride_tricks.as_strided(
      flat[storage_offset:], shape=tuple(size),
      strides=tuple(s * flat.itemsize for s in stride), writeable=False)
  return view.astype(flat.dtype.newbyteorder("="), copy=True)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       backward_hooks: Any = None) -> np.ndarray:
  """torch._utils._rebuild_parameter -> the array itself."""
  if not isinstance(data, np.ndarray):
    raise UnsafePickleError("parameter data is not a tensor")
  return data


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
  """torch_utils.persistence._reconstruct_persistent_obj, made inert."""
  if not isinstance(meta, dict) or meta.get("type") != "class":
    raise UnsafePickleError("persistent object metadata is not a class record")
  state, src = meta.get("state"), meta.get("module_src")
  class_name = meta.get("class_name")
  if not (isinstance(state, dict) and isinstance(src, str)
          and isinstance(class_name, str)):
    raise UnsafePickleError("malformed persistent object metadata")
  init_args = state.get("_init_args", ())
  init_kwargs = state.get("_init_kwargs", {})
  return PersistentRecord(
      class_name=class_name,
      init_args=tuple(init_args) if isinstance(init_args, tuple) else (),
      init_kwargs=dict(init_kwargs) if isinstance(init_kwargs, dict) else {},
      state=state,
      module_src_sha256=hashlib.sha256(src.encode()).hexdigest())


@dataclasses.dataclass
class _PickledDtype:
  """Stands in for `numpy.dtype(...)` inside pickles of NumPy scalars."""
  name: str

  def __setstate__(self, state: Any) -> None:
    # (version, byteorder, ...): keep only the byte order.
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
      self.name = state[1] + self.name


_NUMPY_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                           "f2", "f4", "f8", "c8", "c16"})


def _numpy_dtype(name: Any, align: Any = False, copy: Any = False
                 ) -> _PickledDtype:
  del align, copy
  if name not in _NUMPY_DTYPES:
    raise UnsafePickleError(
        f"numpy dtype {name!r:.50} is not a plain number type")
  return _PickledDtype(name)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
  """numpy.core.multiarray.scalar -> a NumPy number (e.g. weight_gain)."""
  if not isinstance(dtype, _PickledDtype) or not isinstance(data, bytes):
    raise UnsafePickleError("numpy scalar with an unexpected payload")
  dt = np.dtype(dtype.name)
  if dt.kind not in "biufc" or len(data) != dt.itemsize:
    raise UnsafePickleError(
        f"numpy scalar of dtype {dt} with {len(data)} bytes")
  return np.frombuffer(data, dt)[0]


def _load_from_bytes(blob: Any) -> _Storage:
  """torch.storage._load_from_bytes: a legacy torch.save file of a storage."""
  if not isinstance(blob, bytes):
    raise UnsafePickleError("storage bytes are not bytes")
  obj = load_legacy_torch_save(io.BytesIO(blob))
  if not isinstance(obj, _Storage):
    raise UnsafePickleError(f"storage blob holds a {type(obj).__name__}")
  return obj


# (module, name) -> the inert object that stands in for it. Nothing else
# resolves. numpy < 2 pickles scalars under numpy.core, numpy 2 numpy._core.
_COMMON = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): t for name, t in _STORAGE_TYPES.items()},
}
NETWORK_PICKLE_ALLOWLIST = {
    **_COMMON,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): AttrDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}
# A storage blob or a zip state dict holds only tensors in (ordered) dicts.
_STORAGE_ALLOWLIST = dict(_COMMON)


class RestrictedUnpickler(pickle.Unpickler):
  """`pickle.Unpickler` that resolves only `allowlist` globals.

  `storage_loader(storage_type, key, numel, location)` answers torch's
  persistent ids ('storage', type, key, location, numel[, view]); without
  one, any persistent id is refused.
  """

  def __init__(self, file: BinaryIO,
               allowlist: dict[tuple[str, str], Any] | None = None,
               storage_loader: Callable[..., _Storage] | None = None):
    super().__init__(file)
    self.allowlist = (NETWORK_PICKLE_ALLOWLIST if allowlist is None
                      else allowlist)
    self.storage_loader = storage_loader

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self.allowlist[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"refusing global {module}.{name}: not in the allowlist of a "
          "network pickle (the file may be malicious, or of another format)"
      ) from None

  def persistent_load(self, pid: Any) -> Any:
    if (self.storage_loader is None or not isinstance(pid, tuple)
        or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage")):
      raise UnsafePickleError(f"unexpected persistent id {pid!r:.200}")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise UnsafePickleError(
          f"persistent id names no storage type: {pid!r:.200}")
    if len(pid) == 6 and pid[5] is not None:
      raise UnsafePickleError("storage views (very old torch) are unsupported")
    return self.storage_loader(storage_type, str(key), numel, location)


def load_legacy_torch_save(f: BinaryIO) -> Any:
  """Reads a non-zip `torch.save` stream (magic, header, object, storages)."""
  header = [RestrictedUnpickler(f, allowlist={}).load() for _ in range(3)]
  magic, protocol, sys_info = header
  if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
    raise UnsafePickleError("not a legacy torch.save stream")
  if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
    raise UnsafePickleError("only little-endian torch files are supported")
  storages: dict[str, _Storage] = {}

  def loader(storage_type, key, numel, location):
    del numel, location  # the data header below carries the true size
    return storages.setdefault(key, _Storage(storage_type, key))

  obj = RestrictedUnpickler(f, _STORAGE_ALLOWLIST, loader).load()
  keys = RestrictedUnpickler(f, allowlist={}).load()
  if not (isinstance(keys, list) and set(map(str, keys)) == set(storages)):
    raise UnsafePickleError("storage key list does not match the storages")
  for key in keys:
    storage = storages[str(key)]
    head = f.read(8)
    if len(head) != 8:
      raise UnsafePickleError("truncated storage header")
    numel, = struct.unpack("<q", head)
    nbytes = numel * storage.storage_type.dtype.itemsize
    raw = f.read(nbytes) if numel >= 0 else b""
    if len(raw) != nbytes:
      raise UnsafePickleError(f"storage {key}: truncated data")
    storage.fill(raw)
  return obj


def load_torch_zip(path: str | Path) -> Any:
  """Reads a zip `torch.save` file (e.g. a `.pth` state dict)."""
  with zipfile.ZipFile(path) as zf:
    pkls = [n for n in zf.namelist() if n.endswith("/data.pkl")
            and n.count("/") == 1]
    if len(pkls) != 1:
      raise UnsafePickleError(f"{path}: not a torch zip archive "
                              "(no single <name>/data.pkl)")
    prefix = pkls[0][:-len("data.pkl")]
    if (prefix + "byteorder") in zf.namelist() and zf.read(
        prefix + "byteorder").strip() != b"little":
      raise UnsafePickleError("only little-endian torch files are supported")
    storages: dict[str, _Storage] = {}

    def loader(storage_type, key, numel, location):
      del numel, location
      if key not in storages:
        storage = _Storage(storage_type, key)
        try:
          storage.fill(zf.read(f"{prefix}data/{key}"))
        except KeyError:
          raise UnsafePickleError(f"missing storage record {key}") from None
        storages[key] = storage
      return storages[key]

    with zf.open(pkls[0]) as f:
      return RestrictedUnpickler(io.BytesIO(f.read()), _STORAGE_ALLOWLIST,
                                 loader).load()


def load_network_pickle(path: str | Path) -> dict[str, Any]:
  """Reads an official NVlabs `.pkl` (dict with 'G', 'D', 'G_ema', ...)."""
  with open(path, "rb") as f:
    data = RestrictedUnpickler(f).load()
  if not isinstance(data, dict):
    raise UnsafePickleError(
        f"{path}: expected a dict, got {type(data).__name__}")
  return data


def load_file(path: str | Path) -> Any:
  """A network pickle, or a torch zip archive (told apart by the header).

  UnsafePickleError for what the allowlist refuses; a corrupt or truncated
  file is a pickle.UnpicklingError naming it (not the parser's own error)."""
  try:
    if zipfile.is_zipfile(path):
      return load_torch_zip(path)
    return load_network_pickle(path)
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, ValueError, EOFError, IndexError, KeyError,
          TypeError, zipfile.BadZipFile) as e:
    raise pickle.UnpicklingError(
        f"{path}: not a readable network pickle or torch archive (corrupt "
        f"or truncated?): {type(e).__name__}: {e}") from e
