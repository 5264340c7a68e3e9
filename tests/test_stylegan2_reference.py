"""The port against numbers computed once by the OFFICIAL StyleGAN2-ADA code.

`tests/data/stylegan2_official_reference.json` was written by
`scripts/stylegan_reference.py` (torch 2.13.0, NVlabs/stylegan2-ada-pytorch
at the commit it records) for a tiny generator whose every weight is a NumPy
draw from a fixed seed. Here the same weights, in the official layout, go
through the converter's state-dict path into the port, which must reproduce
the official mapping and image.
"""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from flax import nnx
from flax import traverse_util

from sca_jax.convert import stylegan

_REPO = Path(__file__).resolve().parents[1]
_REF = json.loads((_REPO / "tests" / "data" /
                   "stylegan2_official_reference.json").read_text())


def _script():
  # Only NumPy at the script's top level: loading it needs no torch.
  return SimpleNamespace(**runpy.run_path(
      str(_REPO / "scripts" / "stylegan_reference.py")))


def _official_shape(name, shape):
  """Inverse of `stylegan.to_port_layout` on shapes."""
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "weight" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
  if leaf == "weight" and len(shape) == 2:
    return shape[::-1]
  if leaf == "const" and len(shape) == 3:
    return (shape[2], shape[0], shape[1])
  return shape


def test_port_reproduces_the_official_generator():
  ref = _script()
  assert _REF["generator_kwargs"] == json.loads(json.dumps(ref.TINY))
  abstract = stylegan.build_abstract(ref.TINY)
  flat = traverse_util.flatten_dict(
      nnx.to_pure_dict(nnx.state(abstract)), sep=".")
  shapes = {k: _official_shape(k, tuple(v.shape)) for k, v in flat.items()}
  gen = stylegan.generator_from_state_dict(
      ref.reference_state_dict(shapes, _REF["seed"]), ref.TINY)
  z, c = ref.reference_inputs(_REF["seed"])
  call = _REF["call"]

  @nnx.jit
  def forward(g, z, c):
    ws = g.mapping(z, c, truncation_psi=call["truncation_psi"],
                   truncation_cutoff=call["truncation_cutoff"])
    return g.synthesis(ws, noise_mode=call["noise_mode"]), ws

  img, ws = forward(gen, z, c)
  got = ref.summarise(np.asarray(img), np.asarray(ws))
  assert got["image_shape"] == _REF["image_shape"]
  scale = _REF["image_abs_max"]
  np.testing.assert_allclose(got["ws_subsample"], _REF["ws_subsample"],
                             rtol=1e-4, atol=1e-4)
  # float32 on both sides, different summation orders: relative to the
  # image's range (the random weights make it large).
  np.testing.assert_allclose(got["image_subsample"], _REF["image_subsample"],
                             rtol=0, atol=1e-5 * scale)
  for key in ("image_mean", "image_std", "image_abs_max"):
    np.testing.assert_allclose(got[key], _REF[key], rtol=1e-4, atol=1e-6 *
                               scale)
