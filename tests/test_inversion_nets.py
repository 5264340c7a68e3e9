"""Inversion networks: shapes for every image size, range, registry errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sca_jax.attacks import inversion_nets as inv


@pytest.mark.parametrize("size,ups", [(28, 2), (32, 3), (64, 4), (27, 0),
                                      (12, 1)])
def test_num_upsamplings(size, ups):
  assert inv.num_upsamplings(size, size) == ups


def _args(name):
  return {"hidden": (32,)} if name == "mlp" else {"channels": 16,
                                                  "min_channels": 8}


# Traced once per call rather than run op by op: eager NNX compiles every
# primitive separately, which made these tests 10x slower.
@nnx.jit(static_argnames="train")
def _apply(net, rep, train):
  return net(rep, train=train), net.logits(rep, train=False)


@pytest.mark.parametrize("name", ["mlp", "deconv"])
@pytest.mark.parametrize("rep_shape,image_shape", [
    ((500,), (28, 28, 1)),
    ((14, 14, 16), (28, 28, 1)),
    ((64,), (32, 32, 3)),
    ((8, 8, 4), (64, 64, 3)),
    ((10,), (27, 27, 1)),
])
def test_output_shape(name, rep_shape, image_shape):
  # Abstract init and forward: shapes only, no random numbers drawn (each new
  # parameter shape costs a compile of the initialiser on CPU).
  net = nnx.eval_shape(lambda: inv.build_inversion_net(
      name, rep_shape, image_shape, _args(name), nnx.Rngs(0)))
  graphdef, state = nnx.split(net)
  for train in (False, True):
    out = jax.eval_shape(
        lambda s, r, t=train: nnx.merge(graphdef, s)(r, train=t), state,
        jax.ShapeDtypeStruct((3, *rep_shape), jnp.float32))
    assert out.shape == (3, *image_shape)


@pytest.mark.parametrize("name", ["mlp", "deconv"])
def test_output_is_sigmoid_of_logits(name):
  net = inv.build_inversion_net(name, (14, 14, 4), (28, 28, 1), _args(name),
                                nnx.Rngs(0))
  rep = 10.0 * jax.random.normal(jax.random.key(1), (3, 14, 14, 4))
  out, logits = _apply(net, rep, False)
  assert bool(jnp.all((out >= 0) & (out <= 1)))
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(logits)),
                             np.asarray(out), rtol=1e-6)


def test_deconv_batch_norm_only_updates_in_training():
  net = inv.build_inversion_net("deconv", (14, 14, 4), (28, 28, 1),
                                _args("deconv"), nnx.Rngs(0))
  stats = lambda: [np.array(v) for v in
                   jax.tree.leaves(nnx.state(net, nnx.BatchStat))]
  before = stats()
  rep = jax.random.normal(jax.random.key(0), (3, 14, 14, 4)) + 3.0
  _apply(net, rep, False)
  assert all(np.array_equal(a, b) for a, b in zip(before, stats()))
  _apply(net, rep, True)
  assert not all(np.array_equal(a, b) for a, b in zip(before, stats()))


def test_unknown_net_lists_allowed_names():
  with pytest.raises(ValueError, match=r"attack\.split\.net.*'deconv'.*'mlp'"):
    inv.build_inversion_net("resnet", (10,), (28, 28, 1), None, nnx.Rngs(0),
                            field="attack.split.net")


def test_unknown_net_setting_is_named():
  with pytest.raises(ValueError, match=r"config\.attack\.x\.net_args.*"
                     r"\['width'\].*allowed: \['hidden'\]"):
    inv.check_net_args("mlp", {"width": 3}, "attack.x.net")


def test_mlp_learns_a_linear_leak():
  """A tiny net fits images from a random linear projection of them."""
  rng = np.random.default_rng(0)
  proto = rng.uniform(size=(4, 12, 12, 1)).astype(np.float32)
  x = np.clip(proto[rng.integers(0, 4, 256)]
              + 0.05 * rng.normal(size=(256, 12, 12, 1)), 0, 1).astype(
                  np.float32)
  proj = rng.normal(size=(144, 32)).astype(np.float32) / 12
  rep = x.reshape(256, -1) @ proj
  net = inv.MLPInversion((32,), (12, 12, 1), hidden=(64,), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(net)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    loss_fn = lambda p: jnp.mean((nnx.merge(graphdef, p)(rep) - x) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  losses = []
  for _ in range(150):
    params, opt, loss = step(params, opt)
    losses.append(float(loss))
  floor = float(np.mean((x - x.mean(0)) ** 2))
  assert losses[-1] < 0.3 * floor < losses[0]


@pytest.mark.parametrize("kernel,stride,size", [
    (4, 2, 7), (4, 2, 8), (3, 2, 7), (5, 2, 5), (2, 2, 5), (3, 1, 6),
    (5, 3, 4), (1, 2, 3)])
def test_subpixel_conv_transpose_equals_lax_values_and_gradients(
    kernel, stride, size):
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
  ref = jax.lax.conv_transpose(x, k, (stride, stride), "SAME",
                               dimension_numbers=dn)
  out = inv.subpixel_conv_transpose(x, k, (stride, stride))
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=1e-5 * float(jnp.abs(ref).max()))
  w = jax.random.normal(jax.random.key(2), ref.shape)
  grads_ref = jax.grad(lambda x, k: jnp.sum(w * jax.lax.conv_transpose(
      x, k, (stride, stride), "SAME", dimension_numbers=dn)), (0, 1))(x, k)
  grads = jax.grad(lambda x, k: jnp.sum(w * inv.subpixel_conv_transpose(
      x, k, (stride, stride))), (0, 1))(x, k)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, atol=1e-5 * float(jnp.abs(g_ref).max()))


def test_subpixel_layer_is_flax_conv_transpose():
  """Same initial weights from the same rngs, hence the same outputs."""
  ours = inv.SubpixelConvTranspose(6, 5, (4, 4), strides=(2, 2),
                                   rngs=nnx.Rngs(3))
  ref = nnx.ConvTranspose(6, 5, (4, 4), strides=(2, 2), padding="SAME",
                          rngs=nnx.Rngs(3))
  np.testing.assert_array_equal(ours.kernel[...], ref.kernel[...])
  ref.bias[...] = ours.bias[...] = jnp.arange(5.0)
  x = jax.random.normal(jax.random.key(2), (3, 7, 7, 6))
  np.testing.assert_allclose(ours(x), ref(x), atol=1e-5)
