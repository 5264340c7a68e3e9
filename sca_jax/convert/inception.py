"""pytorch-fid's FID Inception weights -> `sca_jax.models.inception`.

Reads `pt_inception-2015-12-05-6726825d.pth`, a `torch.save`d state dict,
with the restricted unpickler of `safe_pickle` (nothing in it is run). The
official file dates from May 2019, before torch wrote zip archives, so both
the legacy stream (re-packed as a zip, unparsed) and the zip format are
accepted. The port names its
variables as the state dict does, so conversion is a key-for-key copy:

* conv weights OIHW -> HWIO; `fc.weight` [out, in] -> [in, out];
* BatchNorm weight, bias, running_mean, running_var unchanged;
* BatchNorm `num_batches_tracked` counters (training only) dropped.

Any other key, a missing key or a shape that does not fit is an error that
names the key. A converted network is an orbax checkpoint (`params/`) next
to `config.json` with the source file's name and sha256 and the name that
FID results record as their feature network.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import traverse_util

from sca_jax.convert import safe_pickle
from sca_jax.convert import store
from sca_jax.models.inception import FIDInceptionV3, InceptionFeatureNetwork

FORMAT = "sca_jax.fid-inception-flax.v1"
OFFICIAL_FILE = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub names downloads <name>-<first hex digits of their sha256>.<ext>.
OFFICIAL_SHA256_PREFIX = "6726825d"
_DROPPED_SUFFIX = ".num_batches_tracked"
# torch.serialization's legacy (pre-zip) format markers.
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


def build_abstract() -> FIDInceptionV3:
  """The port with shapes only (no memory, no random init)."""
  return nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0)))


def _port_shapes(model: FIDInceptionV3) -> dict[str, tuple[int, ...]]:
  state = nnx.to_pure_dict(nnx.state(model))
  return {k: tuple(v.shape) for k, v in
          traverse_util.flatten_dict(state, sep=".").items()}


def _torch_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if name.endswith(".weight") and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
  if name.endswith(".weight") and len(shape) == 2:
    return shape[::-1]
  return shape


@functools.cache
def _official_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  return tuple((k, _torch_shape(k, s))
               for k, s in _port_shapes(build_abstract()).items())


def official_shapes() -> dict[str, tuple[int, ...]]:
  """Every key of the official state dict (bar BN counters), torch shapes."""
  return dict(_official_shapes())


def to_port_layout(name: str, value: np.ndarray) -> np.ndarray:
  """One official (torch-layout) array as the port stores it."""
  if name.endswith(".weight") and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if name.endswith(".weight") and value.ndim == 2:
    return value.T  # [out, in] -> [in, out]
  return value


def _legacy_as_zip(f: BinaryIO) -> io.BytesIO:
  """A legacy `torch.save` stream re-packed as the zip format, unparsed.

  `safe_pickle.load_legacy_torch_save` rebuilds tensors while unpickling,
  but a legacy stream stores their bytes after the pickle, so it cannot read
  a state dict. Here a first pass with inert stand-ins for every callable
  only finds the storages; the pickle (whose persistent ids the zip reader
  accepts as they are) and the raw bytes then go to `load_torch_zip`.
  """
  header = [safe_pickle.RestrictedUnpickler(f, allowlist={}).load()
            for _ in range(3)]
  if header[:2] != [_LEGACY_MAGIC, _LEGACY_PROTOCOL]:
    raise safe_pickle.UnsafePickleError("not a torch.save file (neither a "
                                        "zip archive nor a legacy stream)")
  if not (isinstance(header[2], dict) and header[2].get("little_endian")):
    raise safe_pickle.UnsafePickleError(
        "only little-endian torch files are supported")
  allowlist = {k: v for k, v in safe_pickle.NETWORK_PICKLE_ALLOWLIST.items()
               if k == ("collections", "OrderedDict") or k[0] == "torch"}
  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    allowlist[("torch._utils", name)] = lambda *args: None
  dtypes = {}

  def record(storage_type, key, numel, location):
    del numel, location
    dtypes[key] = storage_type.dtype
    return None

  start = f.tell()
  safe_pickle.RestrictedUnpickler(f, allowlist, record).load()
  end = f.tell()
  keys = safe_pickle.RestrictedUnpickler(f, allowlist={}).load()
  if not (isinstance(keys, list) and set(map(str, keys)) == set(dtypes)):
    raise safe_pickle.UnsafePickleError(
        "storage key list does not match the storages")
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as zf:
    for key in map(str, keys):
      head = f.read(8)
      numel = struct.unpack("<q", head)[0] if len(head) == 8 else -1
      raw = f.read(numel * dtypes[key].itemsize) if numel >= 0 else b""
      if numel < 0 or len(raw) != numel * dtypes[key].itemsize:
        raise safe_pickle.UnsafePickleError(f"storage {key}: truncated data")
      zf.writestr(f"archive/data/{key}", raw)
    f.seek(start)
    zf.writestr("archive/data.pkl", f.read(end - start))
    zf.writestr("archive/byteorder", "little")
  out.seek(0)
  return out


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  """The tensors of a legacy or zip `torch.save` state dict, as NumPy."""
  if zipfile.is_zipfile(path):
    data = safe_pickle.load_torch_zip(path)
  else:
    with open(path, "rb") as f:
      data = safe_pickle.load_torch_zip(_legacy_as_zip(f))
  if not isinstance(data, Mapping):
    raise ValueError(f"{path}: expected a state dict, got "
                     f"{type(data).__name__}")
  for key, value in data.items():
    if not (isinstance(key, str) and isinstance(value, np.ndarray)):
      raise ValueError(f"{path}: entry {key!r:.80} is not a named tensor")
  return dict(data)


def from_state_dict(state_dict: Mapping[str, np.ndarray]) -> FIDInceptionV3:
  """The port with every official parameter and buffer copied in.

  Raises ValueError naming the keys unless they match one to one (BN
  counters aside) and every shape fits.
  """
  graphdef, state = nnx.split(build_abstract())
  target = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  given = {k: v for k, v in state_dict.items()
           if not k.endswith(_DROPPED_SUFFIX)
           or k[:-len(_DROPPED_SUFFIX)] + ".running_mean" not in target}
  missing = sorted(target.keys() - given.keys())
  unexpected = sorted(given.keys() - target.keys())
  if missing or unexpected:
    raise ValueError(
        f"not a pytorch-fid FID Inception state dict: {len(missing)} keys "
        f"missing {missing[:8]}, {len(unexpected)} unexpected "
        f"{unexpected[:8]}")
  values = {}
  for name, spec in target.items():
    raw = np.asarray(given[name])
    if not np.issubdtype(raw.dtype, np.floating):
      raise ValueError(f"{name}: expected floating weights, got {raw.dtype}")
    value = to_port_layout(name, raw)
    if value.shape != spec.shape:
      raise ValueError(f"{name}: has shape {raw.shape}, the official layout "
                       f"is {_torch_shape(name, spec.shape)}")
    values[name] = jnp.asarray(value, spec.dtype)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values, sep="."))
  return nnx.merge(graphdef, state)


def weights_name(sha256: str) -> str:
  """The feature network's name for FID results, from the weights' digest."""
  if sha256.startswith(OFFICIAL_SHA256_PREFIX):
    return "inception_v3_fid(pt_inception-2015-12-05)"
  # Same architecture, other weights: FIDs are not comparable to papers'.
  return f"inception_v3_fid(unofficial-weights:{sha256[:8]})"


def save_fid_inception(model: FIDInceptionV3, out_dir: str | Path,
                       source: Mapping[str, Any]) -> Path:
  """Writes `out_dir/params` (orbax) and `out_dir/config.json`."""
  return store.save_module(model, out_dir, dict(
      format=FORMAT, name=weights_name(source["sha256"]), source=dict(source)))


def _config(path: Path) -> dict[str, Any]:
  config_path = path / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{path}: no config.json (convert the weights "
                            "with scripts/convert_inception.py first)")
  config = json.loads(config_path.read_text())
  if config.get("format") != FORMAT:
    raise ValueError(f"{path}: not a converted FID Inception (format "
                     f"{config.get('format')!r}, expected {FORMAT})")
  return config


def feature_network_name(path: str | Path) -> str:
  """E.g. "inception_v3_fid(pt_inception-2015-12-05)" for a converted dir."""
  return _config(Path(path).absolute())["name"]


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
  """A network saved by `convert` / `save_fid_inception`."""
  _config(Path(path).absolute())
  return store.restore_module(build_abstract(), path)


def load_feature_network(path: str | Path, batch_size: int = 50
                         ) -> InceptionFeatureNetwork:
  """The converted network with its name, ready for `features(images)`."""
  return InceptionFeatureNetwork(feature_network_name(path),
                                 load_fid_inception(path), batch_size)


def convert(in_path: str | Path,
            out_dir: str | Path | None = None) -> FIDInceptionV3:
  """Converts pytorch-fid's `.pth`; saves to `out_dir` if given."""
  in_path = Path(in_path)
  model = from_state_dict(read_state_dict(in_path))
  if out_dir is not None:
    save_fid_inception(model, out_dir,
                       dict(file=in_path.name, sha256=store.sha256(in_path)))
  return model
