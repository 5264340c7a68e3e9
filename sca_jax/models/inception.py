"""FID Inception-v3 (pytorch-fid's port of TF's 2015-12-05 graph) in Flax NNX.

`FIDInceptionV3` maps images in [0, 1] (NHWC, 1 or 3 channels, any size) to
the 2048-d pool3 features that FID is computed on, as pytorch-fid's
`InceptionV3([3])` does:

* grey images are repeated to 3 channels (pytorch-fid reads images as RGB);
* a bilinear resize to 299x299 with align_corners=False and no antialiasing
  (`F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)`);
* scaling from [0, 1] to [-1, 1];
* torchvision's Inception3 trunk (BasicConv2d = bias-free conv + BatchNorm
  with eps 1e-3 + ReLU) with the FID patches: the branch pools of Mixed_5b-d
  (A), Mixed_6b-e (C) and Mixed_7b (E_1) average 3x3 windows over the
  in-image pixels only (count_include_pad=False, as TF does), and Mixed_7c
  (E_2) max-pools instead;
* a global average pool (pool3).

BatchNorm runs in inference form (running statistics). Variables are named
as the official state dict (`Mixed_5b.branch1x1.conv.weight`, ...) so that
`sca_jax.convert.inception` copies weights key for key; conv weights are
HWIO, the 1008-way `fc` (kept so converted checkpoints are complete, and for
`logits`) is [in, out].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from sca_jax import evaluation, metrics

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # TF's 2015-12-05 graph: 1000 ImageNet classes + 8 unused
BN_EPS = 1e-3

# Float32 convs at full precision: on GPUs the default may use TF32, which
# shifts features by ~1e-3 relative and so FIDs by more than their noise.
_PRECISION = lax.Precision.HIGHEST


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _source_taps(n_in: int, n_out: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Indices and weights of torch's bilinear, align_corners=False, 1-D.

  Rounded as torch's CPU/CUDA kernels do: a float32 scale n_in / n_out,
  the source coordinate scale * (i + 0.5) - 0.5 in double then float32,
  clamped at 0 (torch's rule for linear modes); the far edge pixel repeats.
  """
  scale = np.float64(np.float32(n_in) / np.float32(n_out))
  src = (scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  return i0, i1, w1


def resize_bilinear(x_BHWC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """`F.interpolate(mode="bilinear", align_corners=False)` without antialias.

  Separable 2-tap gathers (width, then height, as torch blends), so no
  matrix product can lose precision to TF32 on accelerators.
  """
  _, h, w, _ = x_BHWC.shape
  if (h, w) == tuple(out_hw):
    return x_BHWC  # torch's weights are exactly (1, 0) then
  i0, i1, w1 = _source_taps(w, out_hw[1])
  w1 = jnp.asarray(w1)[:, None]
  x = x_BHWC[:, :, i0] * (1 - w1) + x_BHWC[:, :, i1] * w1
  i0, i1, w1 = _source_taps(h, out_hw[0])
  w1 = jnp.asarray(w1)[:, None, None]
  return x[:, i0] * (1 - w1) + x[:, i1] * w1


def max_pool(x_BHWC: jax.Array, window: int, stride: int,
             padding: int = 0) -> jax.Array:
  """torch `max_pool2d` (floor mode): padding never wins the max."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  return lax.reduce_window(x_BHWC, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, stride, stride, 1), pad)


def avg_pool_3x3_exclude_pad(x_BHWC: jax.Array) -> jax.Array:
  """torch `avg_pool2d(3, stride=1, padding=1, count_include_pad=False)`.

  Border windows are divided by the number of in-image pixels (4 at
  corners, 6 on edges), as TF's average pool; the patch that makes
  pytorch-fid match TF's FID.
  """
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  sums = lax.reduce_window(x_BHWC, 0.0, lax.add, (1, 3, 3, 1), (1,) * 4, pad)
  ones = jnp.ones((1, *x_BHWC.shape[1:3], 1), x_BHWC.dtype)
  counts = lax.reduce_window(ones, 0.0, lax.add, (1, 3, 3, 1), (1,) * 4, pad)
  return sums / counts


class Conv2d(nnx.Module):
  """Bias-free convolution with torch's stride and symmetric padding."""

  def __init__(self, in_channels: int, out_channels: int,
               kernel: int | tuple[int, int], stride: int = 1,
               padding: int | tuple[int, int] = 0, *, rngs: nnx.Rngs):
    kh, kw = _pair(kernel)
    std = np.sqrt(2.0 / (in_channels * kh * kw))  # He init; converted
    self.weight = nnx.Param(std * jax.random.normal(  # weights replace it
        rngs.params(), (kh, kw, in_channels, out_channels), jnp.float32))
    self.stride = _pair(stride)
    self.padding = _pair(padding)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    ph, pw = self.padding
    return lax.conv_general_dilated(
        x_BHWC, self.weight.get_value(), self.stride, ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_PRECISION)


class BatchNorm2d(nnx.Module):
  """Inference-only BatchNorm over channels, torch's names, eps 1e-3."""

  def __init__(self, channels: int):
    self.weight = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.running_mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
    self.running_var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    # torch's inference kernel: x * alpha + (bias - mean * alpha).
    alpha = self.weight.get_value() / jnp.sqrt(
        self.running_var.get_value() + BN_EPS)
    beta = self.bias.get_value() - self.running_mean.get_value() * alpha
    return x_BHWC * alpha + beta


class BasicConv2d(nnx.Module):
  """torchvision's BasicConv2d: conv (no bias) -> BatchNorm -> ReLU."""

  def __init__(self, in_channels: int, out_channels: int,
               kernel: int | tuple[int, int], stride: int = 1,
               padding: int | tuple[int, int] = 0, *, rngs: nnx.Rngs):
    self.conv = Conv2d(in_channels, out_channels, kernel, stride, padding,
                       rngs=rngs)
    self.bn = BatchNorm2d(out_channels)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x_BHWC)))


class Linear(nnx.Module):
  """Dense layer with torch's names; weight stored [in, out]."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.weight = nnx.Param(jax.random.normal(
        rngs.params(), (in_features, out_features), jnp.float32)
                            / np.sqrt(in_features))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

  def __call__(self, x_BD: jax.Array) -> jax.Array:
    return jnp.dot(x_BD, self.weight.get_value(),
                   precision=_PRECISION) + self.bias.get_value()


class FIDInceptionA(nnx.Module):
  """Mixed_5b-d: 1x1 | 5x5 | double 3x3 | avg pool (no pad count) + 1x1."""

  def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([self.branch1x1(x), b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """Mixed_6a (grid 35 -> 17): 3x3/2 | double 3x3, last /2 | max pool /2."""

  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch3x3(x), b3, max_pool(x, 3, 2)], axis=-1)


class FIDInceptionC(nnx.Module):
  """Mixed_6b-e: 1x1 | 1x7,7x1 | 7x1,1x7 twice | avg pool (no pad) + 1x1."""

  def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1),
                                                         padding=(3, 0))
    self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, **row, rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, **col, rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col, rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row, rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col, rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    bp = self.branch_pool(avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([self.branch1x1(x), b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
  """Mixed_7a (grid 17 -> 8): 1x1,3x3/2 | 1x1,1x7,7x1,3x3/2 | max pool /2."""

  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3),
                                     rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0),
                                     rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class FIDInceptionE(nnx.Module):
  """Mixed_7b/c: 1x1 | 3x3 split | double 3x3 split | pool + 1x1.

  `pool="avg"` is FIDInceptionE_1 (Mixed_7b, count_include_pad=False);
  `pool="max"` is FIDInceptionE_2 (Mixed_7c): TF's graph max-pools here.
  """

  def __init__(self, cin: int, pool: str, *, rngs: nnx.Rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1),
                                                         padding=(1, 0))
    self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, **row, rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, **col, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, **row, rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, **col, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = (avg_pool_3x3_exclude_pad(x) if self.pool == "avg"
              else max_pool(x, 3, 1, padding=1))
    return jnp.concatenate([
        self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
        self.branch_pool(pooled)], axis=-1)


class FIDInceptionV3(nnx.Module):
  """pytorch-fid's FID Inception-v3: images in [0, 1] -> (B, 2048) pool3.

  Attribute names are torchvision's (hence the capitals), so the state's
  dotted paths are the official state-dict keys. Random init (He normal, BN
  identity) is only a placeholder and, eagerly on CPU, takes about a minute
  compiling one sampler per weight shape: load converted weights with
  `sca_jax.convert.inception.load_fid_inception` instead.
  """

  def __init__(self, *, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = FIDInceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = FIDInceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = FIDInceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = FIDInceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = FIDInceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = FIDInceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = FIDInceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = FIDInceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = FIDInceptionE(2048, "max", rngs=rngs)
    self.fc = Linear(FEATURE_DIM, NUM_CLASSES, rngs=rngs)

  @staticmethod
  def preprocess(x_BHWC: jax.Array) -> jax.Array:
    """[0, 1] images, 1 or 3 channels -> 299x299x3 in [-1, 1]."""
    if x_BHWC.ndim != 4 or x_BHWC.shape[-1] not in (1, 3):
      raise ValueError(f"expected NHWC images with 1 or 3 channels, got "
                       f"shape {x_BHWC.shape}")
    x = x_BHWC.astype(jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
    return 2.0 * x - 1.0  # pytorch-fid's order: resize, then scale

  def pool3(self, x_BHWC: jax.Array) -> jax.Array:
    """The trunk on preprocessed input (B, H, W, 3) in [-1, 1] -> (B, 2048)."""
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x_BHWC)))
    x = max_pool(x, 3, 2)
    x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b",
                 "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return jnp.mean(x, axis=(1, 2))  # adaptive avg pool to 1x1

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """Images in [0, 1], (B, H, W, 1 or 3) -> pool3 features (B, 2048)."""
    return self.pool3(self.preprocess(x_BHWC))

  def logits(self, x_BHWC: jax.Array) -> jax.Array:
    """The graph's 1008-way logits (pool3 -> fc; not used by FID)."""
    return self.fc(self(x_BHWC))


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef: nnx.GraphDef, state: nnx.State,
              x_BHWC: jax.Array) -> jax.Array:
  return nnx.merge(graphdef, state)(x_BHWC)


def inception_features(model: FIDInceptionV3, x_BHWC: Any,
                       batch_size: int = 50) -> np.ndarray:
  """Pool3 features (N, 2048) float32 of host images in [0, 1], batched.

  The last batch is zero-padded, so each (batch size, image shape) compiles
  once; the graph and weights are jit arguments, not constants.
  """
  x = np.asarray(x_BHWC)
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or not np.issubdtype(
      x.dtype, np.floating):
    raise ValueError(f"expected float NHWC images with 1 or 3 channels, got "
                     f"{x.dtype} {x.shape}")
  metrics.check_unit_range(x, "images")
  graphdef, state = nnx.split(model)
  return evaluation.batched(lambda b: _features(graphdef, state, b),
                            batch_size, x.astype(np.float32))


@dataclasses.dataclass
class InceptionFeatureNetwork:
  """A named FID feature network (same `name`/`features` as EvalClassifier)."""

  name: str
  model: FIDInceptionV3
  batch_size: int = 50

  def features(self, x_BHWC: np.ndarray) -> np.ndarray:
    return inception_features(self.model, x_BHWC, self.batch_size)

  def info(self) -> dict[str, Any]:
    return dict(name=self.name, feature_dim=FEATURE_DIM)
