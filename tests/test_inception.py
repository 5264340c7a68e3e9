"""FID Inception-v3 port and converter, tested without torch and its weights.

Random weights under the official names and torch layouts are written as
`torch.save` files (zip archive and the legacy stream the official 2019 file
uses) by stand-ins registered under torch's module names, converted, and
checked against NumPy references written from torch's formulas.
"""

import io
import json
import os
import pickle
import runpy
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax import traverse_util
from numpy.lib.stride_tricks import sliding_window_view

from sca_jax.convert import inception as convert_inception
from sca_jax.convert import safe_pickle
from sca_jax.models import inception

_REPO = Path(__file__).resolve().parents[1]
_MAGIC, _PROTOCOL = 0x1950A86A20F9469CFC6C, 1001

# Shapes known from torchvision's Inception3 / pytorch-fid, not from the port.
_KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2a_3x3.conv.weight": (32, 32, 3, 3),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7b.branch_pool.conv.weight": (192, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.weight": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# torchvision's inception_v3(aux_logits=False) has 23,834,568 parameters with
# 1000 classes; TF's graph has 1008: + 8 * 2048 + 8 = 23,850,960. Without fc
# (what pool3 features use): 21,785,568. BN running mean/var are buffers.
_NUM_PARAMS = 23_850_960
_NUM_PARAMS_POOL3 = 21_785_568
_NUM_BN_CHANNELS = 17_216


# --- torch.save without torch ------------------------------------------------


class _FakeTorch:
  """`torch.FloatStorage` etc. registered under torch's names, for pickling."""

  def __init__(self, mp: pytest.MonkeyPatch):
    def module(name):
      mod = types.ModuleType(name)
      mp.setitem(sys.modules, name, mod)
      return mod

    def define(mod, obj):
      obj.__module__, obj.__qualname__ = mod.__name__, obj.__name__
      setattr(mod, obj.__name__, obj)
      return obj

    def never(*args):
      raise AssertionError("only referenced by name")

    torch, utils = module("torch"), module("torch._utils")
    self.storage_types = {
        np.dtype(np.float32): define(torch, type("FloatStorage", (), {})),
        np.dtype(np.int64): define(torch, type("LongStorage", (), {}))}
    self.rebuild_tensor_v2 = define(
        utils, types.FunctionType(never.__code__, {}, "_rebuild_tensor_v2"))


class _Storage:
  def __init__(self, array: np.ndarray):
    self.flat = np.ascontiguousarray(array).ravel()


class _Tensor:
  """Pickles as a contiguous CPU tensor over its own storage."""

  def __init__(self, fake: _FakeTorch, array: np.ndarray):
    self.fake, self.shape = fake, array.shape
    self.storage = _Storage(array)

  def __reduce_ex__(self, protocol):
    stride = tuple(int(np.prod(self.shape[i + 1:]))
                   for i in range(len(self.shape)))
    return self.fake.rebuild_tensor_v2, (self.storage, 0, self.shape, stride,
                                         False, OrderedDict())


def _pickle_state_dict(fake, sd, legacy: bool) -> tuple[bytes, dict]:
  tensors = OrderedDict((k, _Tensor(fake, v)) for k, v in sd.items())
  # torch state dicts carry per-module versions in an attribute (a BUILD).
  tensors._metadata = OrderedDict({"": dict(version=1)})
  keys = {id(t.storage): str(i) for i, t in enumerate(tensors.values())}
  storages = {keys[id(t.storage)]: t.storage for t in tensors.values()}

  def persistent_id(obj):
    if not isinstance(obj, _Storage):
      return None
    pid = ("storage", fake.storage_types[obj.flat.dtype], keys[id(obj)],
           "cpu", obj.flat.size)
    return pid + (None,) if legacy else pid  # legacy adds view metadata

  buf = io.BytesIO()
  pickler = pickle.Pickler(buf, protocol=2)
  pickler.persistent_id = persistent_id
  pickler.dump(tensors)
  return buf.getvalue(), storages


def write_torch_zip(fake, path: Path, sd: dict) -> None:
  """torch >= 1.6 `torch.save`: data.pkl plus one record per storage."""
  data, storages = _pickle_state_dict(fake, sd, legacy=False)
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", data)
    zf.writestr("archive/byteorder", "little")
    for key, s in storages.items():
      zf.writestr(f"archive/data/{key}", s.flat.tobytes())
    zf.writestr("archive/version", "3\n")


def write_torch_legacy(fake, path: Path, sd: dict) -> None:
  """torch < 1.6 `torch.save`: magic, protocol, sys info, object, storages."""
  data, storages = _pickle_state_dict(fake, sd, legacy=True)
  with open(path, "wb") as f:
    for header in (_MAGIC, _PROTOCOL, dict(protocol_version=_PROTOCOL,
                                           little_endian=True,
                                           type_sizes=dict(short=2, int=4,
                                                           long=8))):
      pickle.dump(header, f, protocol=2)
    f.write(data)
    pickle.dump(list(storages), f, protocol=2)
    for s in storages.values():
      f.write(struct.pack("<q", s.flat.size))
      f.write(s.flat.tobytes())


def random_official_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights for every official key (He-scaled, BN near identity)."""
  rng = np.random.default_rng(seed)
  sd = {}
  for name, shape in convert_inception.official_shapes().items():
    leaf = name.rsplit(".", 1)[1]
    if name.endswith("conv.weight") or name == "fc.weight":
      fan_in = int(np.prod(shape[1:]))
      v = rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / fan_in)
    elif leaf == "running_var":
      v = rng.uniform(0.5, 2.0, shape)
    elif leaf == "weight":
      v = rng.uniform(0.5, 1.5, shape)
    else:  # bias, running_mean
      v = 0.1 * rng.standard_normal(shape)
    sd[name] = np.asarray(v, np.float32)
    if leaf == "running_var":  # torch >= 0.4.1 BN counter, int64 0-d
      sd[name[:-len(leaf)] + "num_batches_tracked"] = np.array(0, np.int64)
  return sd


@pytest.fixture(scope="module")
def fake():
  with pytest.MonkeyPatch.context() as mp:
    yield _FakeTorch(mp)


@pytest.fixture(scope="module")
def official_sd():
  return random_official_state_dict()


@pytest.fixture(scope="module")
def converted(fake, official_sd, tmp_path_factory):
  """The random weights as a zip .pth, converted by the script."""
  tmp = tmp_path_factory.mktemp("inception")
  pth, out = tmp / convert_inception.OFFICIAL_FILE, tmp / "converted"
  write_torch_zip(fake, pth, official_sd)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "argv", ["convert_inception.py", str(pth), str(out)])
    runpy.run_path(str(_REPO / "scripts" / "convert_inception.py"),
                   run_name="__main__")
  return out


@pytest.fixture(scope="module")
def model(converted):
  return convert_inception.load_fid_inception(converted)


@pytest.fixture(scope="module")
def images():
  # Four 32x32 RGB images: upsampled to 299 as pytorch-fid does.
  return np.random.default_rng(1).uniform(size=(4, 32, 32, 3)).astype(
      np.float32)


@pytest.fixture(scope="module")
def features(model, images):
  return inception.inception_features(model, images, batch_size=2)


# --- NumPy references written from torch's formulas ---------------------------


def np_resize_bilinear(x_NCHW: np.ndarray, out_hw) -> np.ndarray:
  """F.interpolate(mode="bilinear", align_corners=False), antialias off."""

  def taps(n_in, n_out):
    # area_pixel_compute_source_index: float scale, `scale * (i + 0.5) -
    # 0.5` evaluated in double, stored as float; negatives clamp to 0.
    scale = np.float32(n_in / n_out).astype(np.float64)
    src = (scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    src = np.where(src < 0, 0.0, src).astype(np.float64)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = i0 + (i0 < n_in - 1)
    lam1 = np.clip(src - i0, 0.0, 1.0)
    return i0, i1, 1.0 - lam1, lam1

  y0, y1, h0, h1 = (a[:, None] for a in taps(x_NCHW.shape[2], out_hw[0]))
  x0, x1, w0, w1 = taps(x_NCHW.shape[3], out_hw[1])
  g = lambda yy, xx: x_NCHW[:, :, yy, xx]
  return (h0 * (w0 * g(y0, x0) + w1 * g(y0, x1)) +
          h1 * (w0 * g(y1, x0) + w1 * g(y1, x1)))


def np_conv(x_NCHW, w_OIHW, stride=1, pad=0):
  """torch.nn.functional.conv2d (no bias)."""
  sh, sw = (stride, stride) if isinstance(stride, int) else stride
  ph, pw = (pad, pad) if isinstance(pad, int) else pad
  x = np.pad(x_NCHW, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
  win = sliding_window_view(x, w_OIHW.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
  return np.einsum("nchwab,ocab->nohw", win, w_OIHW, optimize=True)


def np_basic_conv(sd, prefix, x_NCHW, stride=1, pad=0):
  """torchvision BasicConv2d in eval mode: conv, BatchNorm(eps=1e-3), ReLU."""
  y = np_conv(x_NCHW, sd[f"{prefix}.conv.weight"].astype(np.float64), stride,
              pad)
  c = lambda k: sd[f"{prefix}.bn.{k}"].astype(np.float64)[:, None, None]
  y = (y - c("running_mean")) / np.sqrt(c("running_var") + 1e-3)
  return np.maximum(y * c("weight") + c("bias"), 0.0)


def np_max_pool(x_NCHW, k, s, pad=0):
  x = np.pad(x_NCHW, [(0, 0), (0, 0), (pad, pad), (pad, pad)],
             constant_values=-np.inf)
  return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(
      axis=(4, 5))


def np_avg_pool_exclude_pad(x_NCHW):
  """avg_pool2d(3, 1, padding=1, count_include_pad=False)."""
  _, _, h, w = x_NCHW.shape
  out = np.empty_like(x_NCHW)
  for i in range(h):
    for j in range(w):
      window = x_NCHW[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
      out[:, :, i, j] = window.mean(axis=(2, 3))
  return out


def np_fid_inception(sd, images_NHWC) -> np.ndarray:
  """pytorch-fid's InceptionV3([3]) forward, float64, from the state dict."""
  x = images_NHWC.astype(np.float64).transpose(0, 3, 1, 2)
  x = 2.0 * np_resize_bilinear(x, (299, 299)) - 1.0

  def mixed(p, x, kind):
    c = lambda n, y, **k: np_basic_conv(sd, f"{p}.{n}", y, **k)
    row, col = ((0, 3), (3, 0)) if kind == "C" else ((0, 1), (1, 0))
    if kind == "A":
      return [c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x), pad=2),
              c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x),
                                    pad=1), pad=1),
              c("branch_pool", np_avg_pool_exclude_pad(x))]
    if kind == "B":
      return [c("branch3x3", x, stride=2),
              c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x),
                                    pad=1), stride=2),
              np_max_pool(x, 3, 2)]
    if kind == "C":
      b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x), pad=row),
             pad=col)
      bd = c("branch7x7dbl_1", x)
      for i, pad in zip(range(2, 6), (col, row, col, row)):
        bd = c(f"branch7x7dbl_{i}", bd, pad=pad)
      return [c("branch1x1", x), b7, bd,
              c("branch_pool", np_avg_pool_exclude_pad(x))]
    if kind == "D":
      b7 = c("branch7x7x3_3", c("branch7x7x3_2", c("branch7x7x3_1", x),
                                pad=(0, 3)), pad=(3, 0))
      return [c("branch3x3_2", c("branch3x3_1", x), stride=2),
              c("branch7x7x3_4", b7, stride=2), np_max_pool(x, 3, 2)]
    b3, bd = c("branch3x3_1", x), c("branch3x3dbl_2", c("branch3x3dbl_1", x),
                                    pad=1)
    pooled = (np_avg_pool_exclude_pad(x) if kind == "E_1"
              else np_max_pool(x, 3, 1, pad=1))
    return [c("branch1x1", x), c("branch3x3_2a", b3, pad=row),
            c("branch3x3_2b", b3, pad=col), c("branch3x3dbl_3a", bd, pad=row),
            c("branch3x3dbl_3b", bd, pad=col), c("branch_pool", pooled)]

  x = np_basic_conv(sd, "Conv2d_1a_3x3", x, stride=2)
  x = np_basic_conv(sd, "Conv2d_2a_3x3", x)
  x = np_max_pool(np_basic_conv(sd, "Conv2d_2b_3x3", x, pad=1), 3, 2)
  x = np_basic_conv(sd, "Conv2d_3b_1x1", x)
  x = np_max_pool(np_basic_conv(sd, "Conv2d_4a_3x3", x), 3, 2)
  for name, kind in [("5b", "A"), ("5c", "A"), ("5d", "A"), ("6a", "B"),
                     ("6b", "C"), ("6c", "C"), ("6d", "C"), ("6e", "C"),
                     ("7a", "D"), ("7b", "E_1"), ("7c", "E_2")]:
    x = np.concatenate(mixed(f"Mixed_{name}", x, kind), axis=1)
  return x.mean(axis=(2, 3))


# --- tests --------------------------------------------------------------------


def test_official_layout_and_parameter_count():
  shapes = convert_inception.official_shapes()
  assert len(shapes) == 94 * 5 + 2  # 94 BasicConv2d (conv + 4 BN) and fc
  for name, shape in _KNOWN_SHAPES.items():
    assert shapes[name] == shape, name
  abstract = convert_inception.build_abstract()
  count = lambda f: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(
      nnx.state(abstract, f)))
  assert count(nnx.Param) == _NUM_PARAMS
  assert count(nnx.Param) - 2048 * 1008 - 1008 == _NUM_PARAMS_POOL3
  assert count(nnx.BatchStat) == 2 * _NUM_BN_CHANNELS


def test_every_weight_lands(converted, model, official_sd):
  config = json.loads((converted / "config.json").read_text())
  assert config["source"]["file"] == convert_inception.OFFICIAL_FILE
  # Random weights are not the official file, whatever their name says.
  assert config["name"] == convert_inception.feature_network_name(converted)
  assert config["name"] == (
      f"inception_v3_fid(unofficial-weights:{config['source']['sha256'][:8]})")
  got = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)), sep=".")
  want = {k: v for k, v in official_sd.items()
          if not k.endswith("num_batches_tracked")}
  assert set(got) == set(want)
  for name, value in want.items():
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
      value = value.T
    np.testing.assert_array_equal(np.asarray(got[name]), value, err_msg=name)


def test_official_name():
  assert convert_inception.weights_name(
      convert_inception.OFFICIAL_SHA256_PREFIX + "0" * 56) == (
          "inception_v3_fid(pt_inception-2015-12-05)")


def test_legacy_torch_save_reads(fake, official_sd, tmp_path):
  # The official file (May 2019) predates torch's zip format.
  path = tmp_path / "legacy.pth"
  write_torch_legacy(fake, path, official_sd)
  assert not zipfile.is_zipfile(path)
  loaded = convert_inception.read_state_dict(path)
  assert loaded.keys() == official_sd.keys()
  for name in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.bias",
               "fc.weight", "Mixed_6e.branch7x7dbl_5.bn.num_batches_tracked"):
    np.testing.assert_array_equal(loaded[name], official_sd[name])
    assert loaded[name].dtype == official_sd[name].dtype


def test_bad_state_dicts_name_the_key(official_sd):
  sd = dict(official_sd)
  sd.pop("Mixed_6c.branch7x7_2.bn.running_var")
  with pytest.raises(ValueError, match=r"missing \['Mixed_6c\.branch7x7_2"):
    convert_inception.from_state_dict(sd)
  sd = dict(official_sd, **{"AuxLogits.fc.weight": np.zeros((1000, 768))})
  with pytest.raises(ValueError, match=r"unexpected \['AuxLogits\.fc\.weight"):
    convert_inception.from_state_dict(sd)
  sd = dict(official_sd, **{"Mixed_7b.branch3x3_2b.conv.weight":
                            np.zeros((384, 384, 1, 3), np.float32)})
  with pytest.raises(ValueError, match=r"Mixed_7b\.branch3x3_2b\.conv\.weight:"
                     r" has shape \(384, 384, 1, 3\), the official layout is "
                     r"\(384, 384, 3, 1\)"):
    convert_inception.from_state_dict(sd)


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_malicious_files_are_refused(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(OrderedDict(w=_RunsCommand(f"touch {marker}")),
                         protocol=2)
  evil_zip = tmp_path / "evil.pth"
  with zipfile.ZipFile(evil_zip, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
  evil_legacy = tmp_path / "evil_legacy.pth"
  evil_legacy.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in (
      _MAGIC, _PROTOCOL, dict(little_endian=True))) + payload)
  for path in (evil_zip, evil_legacy):
    with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
      convert_inception.convert(path, tmp_path / "out")
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_resize_matches_torch_formula():
  rng = np.random.default_rng(2)
  for hw in [(28, 28), (32, 45), (400, 350), (299, 299), (1, 3)]:
    x = rng.uniform(size=(2, *hw, 3)).astype(np.float32)
    want = np_resize_bilinear(x.astype(np.float64).transpose(0, 3, 1, 2),
                              (299, 299)).transpose(0, 2, 3, 1)
    got = inception.resize_bilinear(jnp.asarray(x), (299, 299))
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(hw))
    # jax.image.resize's half-pixel bilinear without antialias agrees.
    jax_resized = jax.image.resize(x, (2, 299, 299, 3), "bilinear",
                                   antialias=False)
    np.testing.assert_allclose(jax_resized, want, atol=1e-5, err_msg=str(hw))


def test_pools_match_torch():
  x = np.random.default_rng(3).normal(size=(2, 4, 5, 6)).astype(np.float32)
  x_nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(
      np.asarray(inception.avg_pool_3x3_exclude_pad(x_nhwc)).transpose(
          0, 3, 1, 2), np_avg_pool_exclude_pad(x), atol=1e-6)
  for k, s, pad in [(3, 2, 0), (3, 1, 1)]:
    np.testing.assert_array_equal(
        np.asarray(inception.max_pool(x_nhwc, k, s, pad)).transpose(
            0, 3, 1, 2), np_max_pool(x, k, s, pad))


def test_basic_conv_blocks_match_numpy(model, official_sd):
  rng = np.random.default_rng(4)
  for prefix, cin, stride, pad in [
      ("Conv2d_1a_3x3", 3, 2, 0), ("Mixed_6b.branch7x7_2", 128, 1, (0, 3)),
      ("Mixed_7b.branch3x3_2b", 384, 1, (1, 0))]:
    x = rng.normal(size=(2, cin, 9, 11)).astype(np.float32)
    block = model
    for part in prefix.split("."):
      block = getattr(block, part)
    got = block(jnp.asarray(x.transpose(0, 2, 3, 1)))
    want = np_basic_conv(official_sd, prefix, x.astype(np.float64), stride,
                         pad)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want,
                               rtol=1e-4, atol=1e-4, err_msg=prefix)


def test_features_match_numpy_reference(features, images, official_sd):
  assert features.shape == (4, 2048) and features.dtype == np.float32
  assert np.all(np.isfinite(features)) and np.all(features >= 0)
  want = np_fid_inception(official_sd, images[:1])
  # float32 vs float64 through 94 layers: measured ~3e-5 relative.
  np.testing.assert_allclose(features[:1], want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())


def test_features_deterministic_and_batched(model, images, features,
                                                 converted):
  net = convert_inception.load_feature_network(converted, batch_size=2)
  assert net.name == convert_inception.feature_network_name(converted)
  again = net.features(images)
  np.testing.assert_array_equal(again, features)
  # Zero-padded last batch (3 = 2 + 1) gives the same features.
  np.testing.assert_array_equal(
      inception.inception_features(model, images[:3], batch_size=2),
      features[:3])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    inception.inception_features(model, images * 2.0)


def test_grey_is_repeated_to_rgb():
  grey = np.random.default_rng(5).uniform(size=(1, 28, 28, 1))
  np.testing.assert_array_equal(
      inception.FIDInceptionV3.preprocess(jnp.asarray(grey, jnp.float32)),
      inception.FIDInceptionV3.preprocess(
          jnp.asarray(np.repeat(grey, 3, axis=-1), jnp.float32)))
  with pytest.raises(ValueError, match="1 or 3 channels"):
    inception.FIDInceptionV3.preprocess(jnp.zeros((1, 8, 8, 2)))
