"""Safe conversion of official StyleGAN2-ADA files, tested without torch.

The pickles are written here by stand-ins registered under torch's module
names (only for the duration of a test), so they reference the same globals
(`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...) and use the
same storage encodings (legacy `torch.save` blobs inside `.pkl` files,
persistent ids into a zip for `.pth`) as files written by torch itself.
"""

import copy
import io
import json
import os
import pickle
import runpy
import struct
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax import traverse_util

from sca_jax.convert import import_stylegan2, safe_pickle, stylegan

sg2 = import_stylegan2()
from third_party.stylegan2 import ops  # noqa: E402  (needs the path above)

_REPO = Path(__file__).resolve().parents[1]
_MAGIC, _PROTOCOL = 0x1950A86A20F9469CFC6C, 1001

# 32x32, conditional, 2 mapping layers; channels 16, 16, 8, 4.
TINY = dict(z_dim=16, c_dim=10, w_dim=16, img_resolution=32, img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=128, channel_max=16,
                                  num_fp16_res=2, conv_clamp=256))


class FakeTorch:
  """Stand-ins for the torch/NVIDIA objects that official pickles name."""

  def __init__(self, monkeypatch):
    def module(name):
      mod = types.ModuleType(name)
      monkeypatch.setitem(sys.modules, name, mod)
      return mod

    def define(mod, obj):
      # pickle stores functions and classes by module and qualified name.
      obj.__module__, obj.__qualname__ = mod.__name__, obj.__name__
      setattr(mod, obj.__name__, obj)
      return obj

    def never(*args):
      raise AssertionError("only referenced by name, never called here")

    torch, utils = module("torch"), module("torch._utils")
    storage = module("torch.storage")
    persistence = module("torch_utils.persistence")
    module("torch_utils")
    module("dnnlib")
    self.FloatStorage = define(torch, type("FloatStorage", (), {}))
    self.EasyDict = define(module("dnnlib.util"), type("EasyDict", (dict,), {}))
    for mod, name in [(utils, "_rebuild_tensor_v2"),
                      (utils, "_rebuild_parameter"),
                      (storage, "_load_from_bytes"),
                      (persistence, "_reconstruct_persistent_obj")]:
      setattr(self, name.strip("_"),
              define(mod, types.FunctionType(never.__code__, {}, name)))


class Storage:
  """A flat float32 buffer; pickles as torch storages do outside torch.save."""

  def __init__(self, fake, flat):
    self.fake, self.flat = fake, np.ascontiguousarray(flat, np.float32)

  def legacy_blob(self) -> bytes:
    """A legacy `torch.save` of this storage alone (what storages pickle to)."""
    f = io.BytesIO()
    for header in (_MAGIC, _PROTOCOL, dict(protocol_version=_PROTOCOL,
                                           little_endian=True,
                                           type_sizes=dict(short=2, int=4,
                                                           long=4))):
      pickle.dump(header, f, protocol=2)
    key = "94319283201632"
    pickler = pickle.Pickler(f, protocol=2)
    pickler.persistent_id = lambda obj: (
        ("storage", self.fake.FloatStorage, key, "cpu", self.flat.size, None)
        if obj is self else None)
    pickler.dump(self)
    pickle.dump([key], f, protocol=2)
    f.write(struct.pack("<q", self.flat.size))
    f.write(self.flat.astype("<f4").tobytes())
    return f.getvalue()

  def __reduce__(self):
    return self.fake.load_from_bytes, (self.legacy_blob(),)


class Tensor:
  """Pickles as a CPU torch tensor: `_rebuild_tensor_v2` over a storage.

  Views exercise the geometry: `offset` puts junk before the data in the
  storage, `transposed` stores a 2-D tensor column-major (a `.t()` view).
  """

  def __init__(self, fake, array, parameter=False, offset=0, transposed=False):
    self.fake, self.parameter = fake, parameter
    self.array = np.asarray(array, np.float32)
    self.offset, self.transposed = offset, transposed
    # Set for zip archives, where storages are persistent ids.
    self.storage = None

  def __reduce_ex__(self, protocol):
    if self.parameter:
      return self.fake.rebuild_parameter, (
          Tensor(self.fake, self.array, offset=self.offset,
                 transposed=self.transposed), False, OrderedDict())
    a = self.array
    if self.transposed and a.ndim == 2:
      data, stride = a.T.ravel(), (1, a.shape[0])
    else:
      data = a.ravel()
      stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
    data = np.concatenate([np.full(self.offset, 7.0, np.float32), data])
    storage = self.storage or Storage(self.fake, data)
    return self.fake.rebuild_tensor_v2, (storage, self.offset, a.shape, stride,
                                      False, OrderedDict())


class Persistent:
  """Pickles as a `torch_utils.persistence` object: source + class + state."""

  def __init__(self, fake, class_name, init_kwargs, module_src, params=(),
               buffers=(), modules=(), **attrs):
    self.fake, self.class_name, self.module_src = fake, class_name, module_src
    self.state = dict(
        training=False, _parameters=OrderedDict(params),
        _buffers=OrderedDict(buffers), _non_persistent_buffers_set=set(),
        _backward_hooks=OrderedDict(), _forward_hooks=OrderedDict(),
        _forward_pre_hooks=OrderedDict(), _state_dict_hooks=OrderedDict(),
        _load_state_dict_pre_hooks=OrderedDict(), _modules=OrderedDict(modules),
        _init_args=(), _init_kwargs=init_kwargs, **attrs)

  def __reduce__(self):
    meta = dict(type="class", version=6, module_src=self.module_src,
                class_name=self.class_name, state=self.state)
    return self.fake.reconstruct_persistent_obj, (meta,)


def official_state_dict(kw, seed=0):
  """Random weights under the official names and torch layouts (OIHW etc.)."""
  rng = np.random.default_rng(seed)
  sd = {}
  z, c, w = kw["z_dim"], kw["c_dim"], kw["w_dim"]

  def fc(name, n_in, n_out):
    sd[f"{name}.weight"] = rng.normal(size=(n_out, n_in))
    sd[f"{name}.bias"] = rng.normal(size=(n_out,))

  n_map = kw["mapping_kwargs"]["num_layers"]
  if c:
    fc("mapping.embed", c, w)
  for i in range(n_map):
    fc(f"mapping.fc{i}", (z + w if c else z) if i == 0 else w, w)
  sd["mapping.w_avg"] = rng.normal(size=(w,))
  syn = kw["synthesis_kwargs"]
  res_log2 = int(np.log2(kw["img_resolution"]))
  ch = lambda r: min(syn["channel_base"] // r, syn["channel_max"])
  filt = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
  for r in (2 ** i for i in range(2, res_log2 + 1)):
    b = f"synthesis.b{r}"
    sd[f"{b}.resample_filter"] = filt
    if r == 4:
      sd[f"{b}.const"] = rng.normal(size=(ch(4), 4, 4))
    for conv, cin in ([("conv1", ch(4))] if r == 4 else
                      [("conv0", ch(r // 2)), ("conv1", ch(r))]):
      fc(f"{b}.{conv}.affine", w, cin)
      sd[f"{b}.{conv}.weight"] = rng.normal(size=(ch(r), cin, 3, 3))
      sd[f"{b}.{conv}.bias"] = rng.normal(size=(ch(r),))
      sd[f"{b}.{conv}.noise_const"] = rng.normal(size=(r, r))
      sd[f"{b}.{conv}.noise_strength"] = rng.normal(size=())
      sd[f"{b}.{conv}.resample_filter"] = filt
    fc(f"{b}.torgb.affine", w, ch(r))
    sd[f"{b}.torgb.weight"] = rng.normal(size=(kw["img_channels"], ch(r), 1, 1))
    sd[f"{b}.torgb.bias"] = rng.normal(size=(kw["img_channels"],))
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


_BUFFERS = ("w_avg", "noise_const", "resample_filter")


def persistent_tree(fake, sd, kw, module_src):
  """The official object tree (Generator > mapping/synthesis > ...) of `sd`."""
  children = {}
  for name in sd:
    parts = name.split(".")
    for depth in range(len(parts) - 1):
      children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])

  def build(prefix, class_name, init_kwargs):
    params, buffers, modules = {}, {}, {}
    for i, name in enumerate(k for k in sd if k.rsplit(".", 1)[0] == prefix):
      leaf = name.rsplit(".", 1)[1]
      # Alternate plain, offset and transposed views (as torch may store).
      t = Tensor(fake, sd[name], parameter=leaf not in _BUFFERS,
                 offset=3 * (i % 2), transposed=(i % 3 == 0))
      (buffers if leaf in _BUFFERS else params)[leaf] = t
    for child in sorted(children.get(prefix, ())):
      modules[child] = build(f"{prefix}.{child}".lstrip("."), child, {})
    # weight_gain is a NumPy float64 in official objects.
    return Persistent(fake, class_name, init_kwargs, module_src, params,
                      buffers, modules, weight_gain=np.float64(0.25))

  kwargs = fake.EasyDict(kw)
  kwargs["mapping_kwargs"] = fake.EasyDict(kw["mapping_kwargs"])
  kwargs["synthesis_kwargs"] = fake.EasyDict(kw["synthesis_kwargs"])
  return build("", "Generator", kwargs)


@pytest.fixture
def fake(monkeypatch):
  return FakeTorch(monkeypatch)


def _marker_src(marker: Path) -> str:
  # If anything ever ran the embedded source, the marker file would appear.
  return f"open({str(marker)!r}, 'w').write('pwned')\n"


def _check_port(gen, sd):
  """Every official array landed, in the port's layout."""
  got = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(gen)), sep=".")
  assert set(got) == set(sd)
  for name, want in sd.items():
    leaf = name.rsplit(".", 1)[1]
    if leaf == "weight" and want.ndim == 4:
      want = want.transpose(2, 3, 1, 0)
    elif leaf == "weight" and want.ndim == 2:
      want = want.T
    elif leaf == "const":
      want = want.transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(got[name]), want, err_msg=name)


@pytest.mark.parametrize("protocol", [3, 4])
def test_network_pickle_round_trip(fake, tmp_path, protocol):
  marker = tmp_path / "pwned"
  sd = official_state_dict(TINY)
  g = persistent_tree(fake, sd, TINY, _marker_src(marker))
  d = Persistent(fake, "Discriminator", {}, _marker_src(marker),
                 params={"b4.weight": Tensor(fake, np.ones((2, 2)), True)})
  pkl = tmp_path / "network-snapshot.pkl"
  with open(pkl, "wb") as f:
    pickle.dump(dict(G=g, D=d, G_ema=g, augment_pipe=None,
                     training_set_kwargs=dict(resolution=32)), f,
                protocol=protocol)

  data = safe_pickle.load_network_pickle(pkl)
  assert data["G_ema"].class_name == "Generator"
  assert data["G_ema"].state["weight_gain"] == 0.25
  assert stylegan.generator_kwargs(data["G_ema"]) == TINY
  out = tmp_path / "converted"
  stylegan.convert(pkl, out)
  gen = stylegan.load_generator(out)
  _check_port(gen, sd)
  config = json.loads((out / "config.json").read_text())
  assert config["generator_kwargs"] == TINY
  img = nnx.jit(lambda g, z, c: g(z, c))(gen, jnp.ones((1, 16)),
                                         jnp.eye(10)[:1])
  assert img.shape == (1, 32, 32, 3) and bool(jnp.all(jnp.isfinite(img)))
  assert not marker.exists()
  assert "pwned" not in "".join(p.read_text(errors="ignore")
                                for p in out.rglob("*") if p.is_file())


def _torch_zip(fake, path, sd):
  """A zip `torch.save` of a state dict: data.pkl + one file per storage."""
  tensors, storages = OrderedDict(), {}
  for i, (name, value) in enumerate(sd.items()):
    t = Tensor(fake, value)
    t.storage = storages.setdefault(str(i), Storage(fake, value.ravel()))
    tensors[name] = t
  keys = {id(s): k for k, s in storages.items()}
  buf = io.BytesIO()
  pickler = pickle.Pickler(buf, protocol=2)
  pickler.persistent_id = lambda obj: (
      ("storage", fake.FloatStorage, keys[id(obj)], "cpu", obj.flat.size)
      if isinstance(obj, Storage) else None)
  pickler.dump(tensors)
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/byteorder", "little")
    for key, s in storages.items():
      zf.writestr(f"archive/data/{key}", s.flat.astype("<f4").tobytes())
    zf.writestr("archive/version", "3\n")


def test_pth_state_dict_round_trip_via_cli(fake, tmp_path, monkeypatch):
  sd = official_state_dict(TINY, seed=1)
  pth = tmp_path / "G_ema.pth"
  _torch_zip(fake, pth, sd)
  loaded = safe_pickle.load_file(pth)
  assert set(loaded) == set(sd)
  np.testing.assert_array_equal(loaded["mapping.fc0.weight"],
                                sd["mapping.fc0.weight"])
  out = tmp_path / "out"
  monkeypatch.setattr(sys, "argv", ["convert_stylegan.py", str(pth), str(out),
                                    "--config", json.dumps(TINY)])
  runpy.run_path(str(_REPO / "scripts" / "convert_stylegan.py"),
                 run_name="__main__")
  _check_port(stylegan.load_generator(out), sd)
  with pytest.raises(ValueError, match="config"):
    stylegan.convert(pth)
  bad = dict(sd)
  bad.pop("synthesis.b8.conv0.weight")
  with pytest.raises(ValueError, match="missing.*b8.conv0.weight"):
    stylegan.generator_from_state_dict(bad, TINY)


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_code_execution_is_refused(fake, tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(dict(G_ema=_RunsCommand(f"touch {marker}")))
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match=r"refusing global (posix|os|nt)\.system"):
    safe_pickle.RestrictedUnpickler(io.BytesIO(payload)).load()
  path = tmp_path / "evil.pkl"
  path.write_bytes(payload)
  with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
    stylegan.convert(path, tmp_path / "out")
  assert not marker.exists()


class _Unknown:
  pass


def test_unknown_global_is_refused(fake, tmp_path):
  payload = pickle.dumps({"G_ema": _Unknown()})
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match=r"refusing global test_convert\._Unknown"):
    safe_pickle.RestrictedUnpickler(io.BytesIO(payload)).load()
  # A storage blob is read with a smaller allowlist: no persistence hooks.
  inner = pickle.dumps(Persistent(fake, "X", {}, "", ()), protocol=2)
  blob = (b"".join(pickle.dumps(h, protocol=2) for h in (
      _MAGIC, _PROTOCOL, dict(little_endian=True))) + inner)
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match="persistence._reconstruct_persistent_obj"):
    safe_pickle.load_legacy_torch_save(io.BytesIO(blob))


def test_malformed_payloads_are_refused(fake):
  """Out-of-bounds tensor views; state forced onto a record by BUILD."""
  def refused(reduce_value, match):
    evil = type("Evil", (), {"__reduce__": lambda self: reduce_value})
    with pytest.raises(safe_pickle.UnsafePickleError, match=match):
      safe_pickle.RestrictedUnpickler(io.BytesIO(pickle.dumps(evil()))).load()

  storage = Storage(fake, np.arange(4))
  refused((fake.rebuild_tensor_v2, (storage, 2, (3,), (1,), False, None)),
          "reads element 4")
  meta = dict(type="class", version=6, module_src="", class_name="X",
              state={})
  refused((fake.reconstruct_persistent_obj, (meta,), {"class_name": "G"}),
          "set state")
  # Records still copy (copy.deepcopy restores state into a blank one).
  record = safe_pickle.RestrictedUnpickler(io.BytesIO(pickle.dumps(
      Persistent(fake, "X", {}, "", ())))).load()
  assert copy.deepcopy(record) == record


def test_corrupt_or_missing_input_is_one_line_naming_the_file(tmp_path):
  script = str(_REPO / "scripts" / "convert_stylegan.py")
  good = pickle.dumps({"G_ema": 1})
  for name, data in [("text.pkl", b"garbage\n"), ("cut.pkl", good[:-3]),
                     ("cut.pth", b"PK\x03\x04junk")]:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError,
                       match=f"{name}: not a readable network pickle"):
      safe_pickle.load_file(path)
  for argv, says in [([str(tmp_path / "text.pkl")], "text.pkl: not a readable"),
                     ([str(tmp_path / "none.pkl")], "none.pkl: no such file"),
                     ([str(tmp_path / "cut.pth"), "--config", "{bad"],
                      "--config: neither a file nor JSON text")]:
    proc = subprocess.run([sys.executable, script, *argv, str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=_REPO,
                          env=dict(os.environ, PYTHONPATH=str(_REPO)))
    assert proc.returncode == 2 and says in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr
  assert not (tmp_path / "o").exists()


# Layout: the converted weights must compute what the official ones do.


def _np_conv_oihw(x_NCHW, w_OIHW, pad):
  """torch.nn.functional.conv2d (a correlation), in NumPy."""
  x = np.pad(x_NCHW, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
  win = np.lib.stride_tricks.sliding_window_view(x, w_OIHW.shape[2:], (2, 3))
  return np.einsum("nchwab,ocab->nohw", win, w_OIHW)


def test_conv_weight_layout():
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(5, 3, 3, 3))
  got = ops.conv2d_resample(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
                            jnp.asarray(stylegan.to_port_layout("weight", w),
                                        jnp.float32), padding=1)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2),
                             _np_conv_oihw(x, w, 1), rtol=1e-4, atol=1e-4)


def test_upsampling_conv_weight_layout():
  """Official up=2 path: conv_transpose2d(w.transpose(0, 1)) then the FIR."""
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(1, 3, 4, 4)), rng.normal(size=(2, 3, 3, 3))
  # conv_transpose2d, stride 2, no padding: out[o, 2i+a, 2j+b] += x*w.
  full = np.zeros((1, 2, 9, 9))
  for i in range(4):
    for j in range(4):
      full[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += np.einsum(
          "c,ocab->oab", x[0, :, i, j], w)
  f = ops.setup_filter([1, 3, 3, 1])
  # upfirdn2d(padding=1, gain=4) with the 4x4 filter: back to 8x8.
  want = np.stack([_np_fir(full[0, o], f * 4, pad=1) for o in range(2)])[None]
  got = ops.conv2d_resample(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
                            jnp.asarray(stylegan.to_port_layout("weight", w),
                                        jnp.float32),
                            f=f, up=2, padding=1, flip_weight=False)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want,
                             rtol=1e-4, atol=1e-4)


def _np_fir(img, f, pad):
  """upfirdn2d with up=down=1: pad, then a true (flipped) 2-D convolution."""
  img = np.pad(img, pad)
  win = np.lib.stride_tricks.sliding_window_view(img, f.shape)
  return np.einsum("hwab,ab->hw", win, f[::-1, ::-1])


def test_fully_connected_and_const_layout():
  rng = np.random.default_rng(2)
  w, b, x = rng.normal(size=(4, 6)), rng.normal(size=4), rng.normal(size=(3, 6))
  layer = nnx.eval_shape(lambda: sg2.FullyConnectedLayer(
      6, 4, lr_multiplier=0.5, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(layer)
  nnx.replace_by_pure_dict(state, {
      "weight": jnp.asarray(stylegan.to_port_layout("fc.weight", w),
                            jnp.float32),
      "bias": jnp.asarray(b, jnp.float32)})
  got = nnx.merge(graphdef, state)(jnp.asarray(x, jnp.float32))
  # torch: addmm(b * lr, x, (w * lr / sqrt(in)).t())
  want = x @ (w * 0.5 / np.sqrt(6)).T + b * 0.5
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  const = rng.normal(size=(5, 4, 4))
  np.testing.assert_array_equal(
      stylegan.to_port_layout("b4.const", const)[1, 2], const[:, 1, 2])

