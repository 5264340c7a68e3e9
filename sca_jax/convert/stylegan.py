"""Official StyleGAN2-ADA weights -> the Flax port in `third_party/stylegan2`.

The port names its variables exactly as the official state dict does
(`synthesis.b8.conv0.affine.weight`, ...), so conversion is a key-for-key
copy with layout changes only:

* conv weights OIHW -> HWIO (the up-sampling conv too: the port's
  `conv2d_resample` applies the official transposed-convolution flip itself,
  so weights keep their official meaning);
* fully connected weights [out, in] -> [in, out];
* the constant input [C, H, W] -> [H, W, C];
* everything else (biases, w_avg, noise_const, noise_strength,
  resample_filter) unchanged.

A converted generator is an orbax checkpoint of its variables (`params/`)
next to `config.json` with the official constructor kwargs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import traverse_util

from sca_jax.convert import import_stylegan2
from sca_jax.convert import safe_pickle
from sca_jax.convert import store

if TYPE_CHECKING:
  from third_party.stylegan2 import Generator

FORMAT = "sca_jax.stylegan2-flax.v1"
_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                   "mapping_kwargs", "synthesis_kwargs")


def _plain(value: Any, where: str) -> Any:
  """JSON-ready copy of pickled kwargs (EasyDicts, tuples, NumPy numbers)."""
  if isinstance(value, Mapping):
    return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v, where) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise ValueError(f"{where}: unsupported constructor argument of type "
                   f"{type(value).__name__}")


def generator_kwargs(record: safe_pickle.PersistentRecord) -> dict[str, Any]:
  """The official `Generator(...)` arguments stored in a network pickle."""
  if record.class_name != "Generator":
    raise ValueError(f"expected a Generator, got a {record.class_name}")
  kwargs = dict(zip(_GENERATOR_ARGS, record.init_args))
  kwargs.update(record.init_kwargs)
  return _plain(kwargs, "Generator")


def build_abstract(kwargs: Mapping[str, Any]) -> Generator:
  """The port's generator with shapes only (no memory, no random init)."""
  sg2 = import_stylegan2()
  try:
    return nnx.eval_shape(lambda: sg2.Generator(**kwargs, rngs=nnx.Rngs(0)))
  except TypeError as e:
    raise ValueError(f"the port does not accept these Generator kwargs: {e}"
                     ) from None


def to_port_layout(name: str, value: np.ndarray) -> np.ndarray:
  """One official (torch-layout) array as the port stores it."""
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "weight" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "weight" and value.ndim == 2:
    return value.T  # [out, in] -> [in, out]
  if leaf == "const" and value.ndim == 3:
    return value.transpose(1, 2, 0)  # CHW -> HWC
  return value


def generator_from_state_dict(state_dict: Mapping[str, np.ndarray],
                              kwargs: Mapping[str, Any]) -> Generator:
  """The port with every official parameter and buffer copied in.

  Raises ValueError unless the keys match one to one and every shape fits.
  """
  graphdef, state = nnx.split(build_abstract(kwargs))
  target = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  missing = sorted(target.keys() - state_dict.keys())
  unexpected = sorted(state_dict.keys() - target.keys())
  if missing or unexpected:
    raise ValueError(f"state dict does not fit the generator: missing "
                     f"{missing[:8]}, unexpected {unexpected[:8]}")
  values = {}
  for name, spec in target.items():
    value = to_port_layout(name, np.asarray(state_dict[name]))
    if value.shape != spec.shape:
      raise ValueError(f"{name}: official shape {np.shape(state_dict[name])} "
                       f"gives {value.shape}, the port needs {spec.shape}")
    values[name] = jnp.asarray(value, spec.dtype)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values, sep="."))
  return nnx.merge(graphdef, state)


def save_generator(gen: Generator, out_dir: str | Path,
                   source: Mapping[str, Any] | None = None) -> Path:
  """Writes `out_dir/params` (orbax) and `out_dir/config.json`."""
  return store.save_module(gen, out_dir, dict(
      format=FORMAT, generator_kwargs=gen.init_kwargs,
      source=dict(source or {})))


def load_generator(path: str | Path) -> Generator:
  """A generator saved by `save_generator` / `convert`."""
  path = Path(path).absolute()
  config = json.loads((path / "config.json").read_text())
  if config.get("format") != FORMAT:
    raise ValueError(f"{path}: not a converted StyleGAN2 generator "
                     f"(format {config.get('format')!r}, expected {FORMAT})")
  return store.restore_module(build_abstract(config["generator_kwargs"]),
                              path)


def convert(in_path: str | Path, out_dir: str | Path | None = None, *,
            network: str = "G_ema",
            config: Mapping[str, Any] | None = None) -> Generator:
  """Converts an official `.pkl` (or a `.pth` state dict plus `config`).

  `network` picks the pickle's entry ('G_ema' for sampling, or 'G'); for a
  state dict it is only used if the file holds a dict of state dicts.
  `config` (Generator kwargs) overrides those stored in a pickle and is
  required for a bare state dict. Saves to `out_dir` if given.
  """
  in_path = Path(in_path)
  data = safe_pickle.load_file(in_path)
  source: dict[str, Any] = dict(file=in_path.name, sha256=store.sha256(in_path))
  record = data.get(network) if isinstance(data, dict) else None
  if isinstance(record, safe_pickle.PersistentRecord):
    kwargs = generator_kwargs(record) if config is None else dict(config)
    state_dict = record.state_dict()
    source.update(network=network,
                  module_src_sha256=record.module_src_sha256)
  else:
    if config is None:
      raise ValueError(f"{in_path} holds no persistent {network!r} network; "
                       "a bare state dict needs the Generator kwargs (config)")
    kwargs = dict(config)
    state_dict = data[network] if isinstance(record, dict) else data
    if not (isinstance(state_dict, dict) and all(
        isinstance(v, np.ndarray) for v in state_dict.values())):
      raise ValueError(f"{in_path}: expected a state dict of tensors")
  gen = generator_from_state_dict(state_dict, kwargs)
  if out_dir is not None:
    save_generator(gen, out_dir, source)
  return gen
