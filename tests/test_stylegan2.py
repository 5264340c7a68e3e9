"""The Flax StyleGAN2 port: official configs' shapes, forward pass, ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax import traverse_util
from scipy import signal

from sca_jax.convert import import_stylegan2

sg2 = import_stylegan2()
from third_party.stylegan2 import ops  # noqa: E402  (needs the path above)

# Official configs, as train.py builds them (cfg paper1024 / cifar).
FFHQ_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024,
                 img_channels=3, mapping_kwargs=dict(num_layers=8),
                 synthesis_kwargs=dict(channel_base=32768, channel_max=512,
                                       num_fp16_res=4, conv_clamp=256))
CIFAR_10 = dict(z_dim=512, c_dim=10, w_dim=512, img_resolution=32,
                img_channels=3, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=16384, channel_max=512,
                                      num_fp16_res=4, conv_clamp=256))
TINY = dict(z_dim=16, c_dim=10, w_dim=16, img_resolution=16, img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=128, channel_max=16,
                                  conv_clamp=256))


def _shapes(kwargs):
  gen = nnx.eval_shape(lambda: sg2.Generator(**kwargs, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(gen, nnx.Param))
  buffers = nnx.to_pure_dict(nnx.state(gen, sg2.Buffer))
  flat = lambda t: {k: v.shape for k, v in
                    traverse_util.flatten_dict(t, sep=".").items()}
  return gen, flat(params), flat(buffers)


def _count(shapes):
  return sum(int(np.prod(s)) for s in shapes.values())


def test_ffhq_1024_shapes_and_counts():
  gen, params, buffers = _shapes(FFHQ_1024)
  assert gen.num_ws == 18
  # Counted with the official networks.py (torch, same kwargs):
  # sum(p.numel() for p in G.parameters()) and likewise for G.buffers().
  assert _count(params) == 30_370_060
  assert _count(buffers) == 2_797_104
  assert params["mapping.fc0.weight"] == (512, 512)
  assert params["synthesis.b4.const"] == (4, 4, 512)
  assert params["synthesis.b1024.conv0.weight"] == (3, 3, 64, 32)
  assert params["synthesis.b1024.torgb.weight"] == (1, 1, 32, 3)
  assert buffers["synthesis.b1024.conv1.noise_const"] == (1024, 1024)
  assert "mapping.embed.weight" not in params


def test_cifar10_shapes_and_counts():
  gen, params, _ = _shapes(CIFAR_10)
  # 4x4 block: conv1 + toRGB; 8, 16, 32: conv0, conv1; + the last toRGB.
  assert gen.num_ws == 8
  # Official count for these kwargs (channel_base 32768, train.py's cifar
  # value, gives the same: 512 channels at every resolution up to 64).
  assert _count(params) == 20_215_315
  assert params["mapping.embed.weight"] == (10, 512)
  assert params["mapping.fc0.weight"] == (1024, 512)
  assert params["synthesis.b32.conv0.weight"] == (3, 3, 512, 512)


def _normal(shape, seed=0):
  # NumPy draws: jax.random compiles once per shape, slow on a busy CPU.
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _random_generator(kwargs, seed=0):
  """Random weights from NumPy on abstract shapes: no per-shape compiles."""
  graphdef, state = nnx.split(
      nnx.eval_shape(lambda: sg2.Generator(**kwargs, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  # Every variable random, so noise strengths and w_avg matter too.
  values = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
            for k, v in flat.items()}
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values, sep="."))
  return nnx.merge(graphdef, state)


@nnx.jit
def _tiny_outputs(gen, z, c):
  ws = gen.mapping(z, c)
  return dict(
      default=gen(z, c), const=gen(z, c, noise_mode="const"),
      synthesis=gen.synthesis(ws), ws=ws, none=gen(z, c, noise_mode="none"),
      random1=gen(z, c, noise_mode="random", noise_key=jax.random.key(0)),
      random2=gen(z, c, noise_mode="random", noise_key=jax.random.key(1)),
      psi0=gen.mapping(z, c, truncation_psi=0),
      cut=gen.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2),
      # PPA optimises w through the synthesis network.
      grad_ws=jax.grad(lambda w: jnp.mean(gen.synthesis(w) ** 2))(ws))


@pytest.fixture(scope="module")
def tiny():
  gen = _random_generator(TINY)
  z = _normal((2, 16), seed=1)
  c = jnp.eye(10)[jnp.array([1, 7])]
  return gen, _tiny_outputs(gen, z, c)


def test_forward_shape_and_noise_modes(tiny):
  gen, out = tiny
  img = out["default"]
  assert img.shape == (2, 16, 16, 3) and img.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(img)))
  np.testing.assert_array_equal(img, out["const"])  # 'const' is the default
  np.testing.assert_allclose(img, out["synthesis"], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out["random1"], out["random2"])
  assert not np.allclose(img, out["none"])
  grad = out["grad_ws"]
  assert grad.shape == out["ws"].shape and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.min(jnp.abs(grad).sum(axis=(0, 2)))) > 0  # every w used
  with pytest.raises(ValueError, match="noise_key"):
    gen.synthesis(out["ws"], noise_mode="random")


def test_truncation(tiny):
  gen, out = tiny
  w_avg = gen.mapping.w_avg[...]
  ws = out["psi0"]
  assert ws.shape == (2, gen.num_ws, 16)
  np.testing.assert_allclose(ws, jnp.broadcast_to(w_avg, ws.shape), atol=1e-6)
  full, cut = out["ws"], out["cut"]
  np.testing.assert_allclose(cut[:, :2], w_avg + 0.5 * (full[:, :2] - w_avg),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cut[:, 2:], full[:, 2:], rtol=1e-6)


def test_orig_architecture_output_is_clamped():
  # With 'orig' the image is the last toRGB alone, clamped to +-conv_clamp.
  kwargs = dict(TINY, c_dim=0, synthesis_kwargs=dict(
      channel_base=128, channel_max=16, architecture="orig", conv_clamp=0.5))
  gen = _random_generator(kwargs, seed=1)
  img = nnx.jit(lambda g, z: g(z, None))(
      gen, _normal((2, 16)))
  assert img.shape == (2, 16, 16, 3)
  assert float(jnp.max(jnp.abs(img))) <= 0.5


@jax.jit
def _modulated_both_ways(x, w, styles):
  fused_NHWIO = ops.demodulated_weights(w, styles)
  per_sample = jax.vmap(lambda x1, w1: jax.lax.conv_general_dilated(
      x1[None], w1, (1, 1), [(1, 1), (1, 1)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"))[0])(x, fused_NHWIO)
  return fused_NHWIO, per_sample, ops.modulated_conv2d(x, w, styles, padding=1)


def test_demodulation_normalises_weights():
  w = _normal((3, 3, 8, 5))
  styles = _normal((4, 8), seed=1) + 1
  x = _normal((4, 6, 6, 8), seed=2)
  w_NHWIO, per_sample, batched = _modulated_both_ways(x, w, styles)
  norms = jnp.sqrt(jnp.sum(jnp.square(w_NHWIO), axis=(1, 2, 3)))
  np.testing.assert_allclose(norms, np.ones((4, 5)), rtol=1e-5)
  # The batched (non-fused) op equals the official fused per-sample conv.
  np.testing.assert_allclose(batched, per_sample, rtol=1e-4, atol=1e-5)


def np_upfirdn2d(x_NHWC, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1.0):
  """Reference: zero-insert, pad/crop, true 2-D convolution, decimate."""
  px0, px1, py0, py1 = padding
  n, h, w, c = x_NHWC.shape
  up_x = np.zeros((n, h * up, w * up, c))
  up_x[:, ::up, ::up] = x_NHWC
  up_x = np.pad(up_x, [(0, 0), (max(py0, 0), max(py1, 0)),
                       (max(px0, 0), max(px1, 0)), (0, 0)])
  up_x = up_x[:, max(-py0, 0):up_x.shape[1] - max(-py1, 0),
              max(-px0, 0):up_x.shape[2] - max(-px1, 0)]
  out = np.stack([np.stack([signal.convolve2d(up_x[i, :, :, k], f * gain,
                                              mode="valid")
                            for k in range(c)], -1) for i in range(n)])
  return out[:, ::down, ::down]


def test_upfirdn2d_matches_numpy_reference():
  f = ops.setup_filter([1, 3, 3, 1])
  assert f.shape == (4, 4) and np.isclose(f.sum(), 1)
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  # An asymmetric filter, so a flip would show.
  f_asym = np.arange(12, dtype=np.float32).reshape(3, 4) / 66
  f_big = np.arange(25, dtype=np.float32).reshape(5, 5) / 300
  for filt, kw in [(f, dict(up=2, padding=(2, 1, 2, 1), gain=4.0)),
                   (f_asym, dict(up=2, padding=(1, 2, 0, 3), gain=4.0)),
                   (f_asym, dict(up=1, down=2, padding=(1, 2, 2, 1))),
                   (f_asym, dict(up=3, padding=(-1, 2, 0, -2))),
                   # 25 taps: the depthwise-convolution path, not shifted sums.
                   (f_big, dict(up=2, padding=(2, 2, 2, 2), gain=4.0))]:
    got = ops.upfirdn2d(jnp.asarray(x), jnp.asarray(filt), **kw)
    want = np_upfirdn2d(x, filt, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upsample2d_keeps_a_constant_image_constant():
  x = jnp.full((1, 8, 8, 2), 0.7)
  y = ops.upsample2d(x, ops.setup_filter([1, 3, 3, 1]))
  assert y.shape == (1, 16, 16, 2)
  # Away from the zero-padded border the 4x4 filter sees only the constant.
  np.testing.assert_allclose(y[:, 2:-2, 2:-2], 0.7, rtol=1e-6)
  np.testing.assert_allclose(y, np_upfirdn2d(np.asarray(x), np.asarray(
      ops.setup_filter([1, 3, 3, 1])), up=2, padding=(2, 1, 2, 1), gain=4),
                             rtol=1e-5)
