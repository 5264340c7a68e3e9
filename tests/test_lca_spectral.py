"""The FFT decode/encode equal the direct convolutions, values and gradients,
inside the solvers too; `auto` picks it only where it applies."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from sca_jax import lca
from sca_jax.lca import ops, spectral

# (batch, height, width, channels, features, kernel): square and not, odd and
# even kernels, one and many channels, a kernel as large as the image.
SHAPES = [(3, 28, 28, 16, 28, 5), (2, 13, 9, 3, 4, 4), (2, 8, 8, 1, 5, 3),
          (1, 7, 11, 2, 3, 7)]


def _rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


def _data(shape):
  b, h, w, c, f, k = shape
  kx, kd, ka = jax.random.split(jax.random.key(h * w + c), 3)
  return (jax.random.normal(kx, (b, h, w, c)),
          jax.random.normal(kd, (k, k, c, f)),
          jax.random.normal(ka, (b, h, w, f)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_maps_equal_the_direct_convolutions(shape):
  x, D, a = _data(shape)
  S = spectral.SpectralDictionary.build(D, x.shape[1:3])
  assert all(n >= m for n, m in zip(S.grid, x.shape[1:3]))
  assert _rel(ops.encode(x, D, 1), S.encode(x)) < 1e-6
  assert _rel(ops.decode(a, D, 1, x.shape[1:3]), S.decode(a)) < 1e-6
  # Adjoint pair, as the direct ones: <D a, x> == <a, D^T x>.
  lhs, rhs = jnp.vdot(S.decode(a), x), jnp.vdot(a, S.encode(x))
  assert abs(float(lhs - rhs)) < 1e-4 * abs(float(lhs))


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_gradients_equal_the_direct_ones(shape):
  x, D, a = _data(shape)
  hw = x.shape[1:3]

  def loss(x, D, direct):
    if direct:
      y = ops.encode(x - ops.decode(a, D, 1, hw), D, 1)
    else:
      S = spectral.SpectralDictionary.build(D, hw)
      y = S.encode(x - S.decode(a))
    return jnp.sum(jnp.tanh(0.1 * y))

  g_direct = jax.grad(loss, (0, 1))(x, D, True)
  g_fft = jax.grad(loss, (0, 1))(x, D, False)
  for gd, gf in zip(g_direct, g_fft):
    assert _rel(gd, gf) < 1e-4  # float32 sums of K*K*C terms


@pytest.mark.parametrize("solver", ["fista", "lca"])
def test_solves_and_their_gradients_match(solver):
  x, D, _ = _data((4, 16, 16, 6, 12, 5))
  D = lca.normalize_dictionary(D)
  x = jax.nn.relu(x)
  cfg = lca.LCAConfig(lam=0.3, num_iters=20, solver=solver, tau=10.0)

  def codes(x, D, conv):
    return lca.solve(x, D, dataclasses.replace(cfg, conv=conv)).codes_BHWF

  a_direct, a_fft = codes(x, D, "direct"), codes(x, D, "fft")
  assert float(jnp.mean(a_direct > 0)) > 0.01  # not a trivial all-zero solve
  assert _rel(a_direct, a_fft) < 1e-5
  grads = {conv: jax.grad(lambda x, D: jnp.sum(codes(x, D, conv) ** 2),
                          (0, 1))(x, D) for conv in ("direct", "fft")}
  for gd, gf in zip(grads["direct"], grads["fft"]):
    assert _rel(gd, gf) < 1e-4


def test_auto_takes_the_fft_only_where_it_pays():
  assert spectral.worth_it((5, 5, 16, 28), 1)
  assert not spectral.worth_it((5, 5, 1, 16), 1)
  assert not spectral.worth_it((5, 5, 1, 64), 1)  # one channel: taps path
  assert not spectral.worth_it((5, 5, 16, 28), 2)


def test_fft_size_is_smooth_and_large_enough():
  for n in range(1, 70):
    for k in (1, 3, 4, 5, 7):
      m = spectral.fft_size(n, k)
      r = m
      for p in (2, 3, 5):
        while r % p == 0:
          r //= p
      lo = (k - 1) // 2  # the "same" padding before the image
      assert r == 1 and m % 2 == 0 and m >= max(n + lo, n + k - 1 - lo)
      assert m < 2 * (n + k)
  # Smaller than the full convolution's n + k - 1 where the crop allows.
  assert spectral.fft_size(28, 5) == 30


def test_bad_conv_is_refused_by_name():
  with pytest.raises(ValueError, match="conv must be one of"):
    lca.LCAConfig(conv="winograd")
  with pytest.raises(ValueError, match="needs stride 1"):
    lca.LCAConfig(conv="fft", stride=2)
