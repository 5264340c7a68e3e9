"""Shared test fixtures: tiny configs and the data they run on.

Tests run on the published files under `$SCA_JAX_DATA_DIR` (or
`../shared/data`) when they are there, else on a small MNIST-format set made
here (`synthetic_mnist_dir`), so no test skips for missing data. Tests that
check the real files themselves use `real_data_dir`, which fails saying
what to set. Every cache points into a session temporary folder, and
downloads at a closed local port, so no test writes to the user's home or
reaches the network by accident.
"""

import atexit
import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
from pathlib import Path


def _share_compiled_programs() -> None:
  """One XLA compilation cache for the test session and its subprocesses.

  The tests build the same tiny models again and again, in process and in
  the `python -m sca_jax.main` / sweep subprocesses, and on 2 CPU cores
  compiling is most of a tiny run (measured: 260 s -> 150 s for three test
  files). JAX reads these variables when it is imported, so they are set
  before any import of it; subprocesses inherit them. A fresh folder per
  session, removed at exit, so no run ever loads another session's programs.
  A cache the user set is left alone.
  """
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  folder = tempfile.mkdtemp(prefix="sca_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
  # Every program, however quick to compile or small.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_share_compiled_programs()

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from sca_jax import config_lib
from sca_jax import data
from sca_jax import sweep_cells

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_dir() -> Path:
  """`$SCA_JAX_DATA_DIR`, else the shared folder beside the clone."""
  return Path(os.environ.get("SCA_JAX_DATA_DIR") or _DEFAULT_DATA)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_and_offline(tmp_path_factory):
  """Caches in a session temporary folder; downloads fail fast, locally."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SCA_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # Port 9 (discard) on the loopback: nothing listens, refused at once.
    mp.setenv("SCA_JAX_DOWNLOAD_URL", "http://127.0.0.1:9")
    yield


def write_idx(path: Path, array: np.ndarray) -> None:
  """Writes a gzipped ubyte IDX file, as MNIST publishes them."""
  header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(
      f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def digit_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """n 28x28 grey digits drawn with a font, moved, rotated, thickened and
  noised at random: ten classes a small CNN learns, MNIST-like in layout
  (white strokes on black, centred)."""
  rng = np.random.default_rng(seed)
  font = ImageFont.load_default(size=20)
  labels = rng.integers(0, 10, n).astype(np.uint8)
  images = np.empty((n, 28, 28), np.uint8)
  for i, label in enumerate(labels):
    canvas = Image.new("L", (28, 28))
    dx, dy = rng.integers(-2, 3, 2)
    ImageDraw.Draw(canvas).text(
        (14 + dx, 14 + dy), str(label), fill=255, font=font, anchor="mm",
        stroke_width=int(rng.integers(1, 3)), stroke_fill=255)
    canvas = canvas.rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR)
    noisy = np.asarray(canvas, np.float32) + rng.normal(0, 8, (28, 28))
    images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
  return images, labels


def cifar10_python_tar(path: Path, per_batch: int = 2) -> np.ndarray:
  """Writes a small cifar-10-python.tar.gz in the official layout (batch
  pickles of {b"data": N x 3072 uint8 R,G,B planes, b"labels": [...]});
  returns the NHWC images it holds, in the official order."""
  rng = np.random.default_rng(0)
  images = []
  with tarfile.open(path, "w:gz") as tar:
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
      images.append(x)
      labels = [int(v) for v in rng.integers(0, 10, per_batch)]
      payload = pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(
          per_batch, 3072), b"labels": labels}, protocol=2)
      info = tarfile.TarInfo(f"cifar-10-batches-py/{b}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return np.concatenate(images)


@pytest.fixture(scope="session")
def synthetic_mnist_dir(tmp_path_factory) -> str:
  """A data dir whose mnist/ holds 5,000 + 1,000 drawn digits as IDX .gz."""
  root = tmp_path_factory.mktemp("synthetic_data")
  (root / "mnist").mkdir()
  for split, n, seed in (("train", 5000, 0), ("t10k", 1000, 1)):
    x, y = digit_images(n, seed)
    write_idx(root / "mnist" / f"{split}-images-idx3-ubyte.gz", x)
    write_idx(root / "mnist" / f"{split}-labels-idx1-ubyte.gz", y)
  return str(root)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
  """The published files; fails, saying what to set, when they are absent."""
  path = shared_data_dir()
  if not (path / "mnist").is_dir():
    pytest.fail(
        f"this test checks the published data files, not found under {path}:"
        f" set SCA_JAX_DATA_DIR to a folder with mnist/, fashion_mnist/, ... "
        f"(docs/data.md), or deselect such tests with -m 'not real_data'",
        pytrace=False)
  return path


@pytest.fixture(scope="session")
def data_dir(request) -> str:
  """The published files if present, else the synthetic MNIST set."""
  path = shared_data_dir()
  if (path / "mnist").is_dir():
    return str(path)
  return request.getfixturevalue("synthetic_mnist_dir")


# The tiny settings: `tiny_config` applies them, sweep-cell tests pass them
# as a cell's overrides.
TINY_OVERRIDES = {
    "data.max_train": 256, "data.max_test": 128, "data.max_aux": 256,
    "defense.features": (4, 6), "defense.hidden": (32,),
    "defense.num_iters": 5, "train.epochs": 1, "train.batch_size": 32,
    "train.eval_batch_size": 128, "train.checkpoint_every": 4,
    "train.log_every": 2, "attacks": (),
    # The gap to the optimum against 50 FISTA steps on 32 images (default
    # 500 on 128: ~30 s of a tiny run's ~40 s on 2 cores).
    "solver_gap.reference_iters": 50, "solver_gap.num_images": 32,
}


def tiny_config(defense: str = "sca", data_dir: str | None = None
                ) -> ml_collections.ConfigDict:
  """A config that trains in seconds on 2 CPU cores."""
  c = config_lib.get_config(None, name=defense, dataset="mnist")
  c.data.data_dir = data_dir
  # attacks=(): attack tests opt in (tests/test_experiment.py, test_attacks)
  for field, value in TINY_OVERRIDES.items():
    sweep_cells.set_field(c, field, value)
  return c


@pytest.fixture
def tiny(data_dir):
  return lambda defense="sca": tiny_config(defense, data_dir)


@pytest.fixture(scope="session")
def mnist_splits(data_dir):
  """`mnist_splits(max_train, max_test, max_aux)`: seed-0 splits of the local
  MNIST files, built once per size for the whole session."""
  cache = {}

  def make(max_train: int, max_test: int, max_aux: int) -> data.Splits:
    sizes = (max_train, max_test, max_aux)
    if sizes not in cache:
      cache[sizes] = data.make_splits(ml_collections.ConfigDict(dict(
          name="mnist", data_dir=data_dir, train_fraction=0.7,
          max_train=max_train, max_test=max_test, max_aux=max_aux)), seed=0)
    return cache[sizes]
  return make


def toy_labelled_images(n: int, class_probs: tuple[float, ...]
                        ) -> tuple[np.ndarray, np.ndarray]:
  """n binary 28x28x1 images, labels drawn with `class_probs`; the density of
  lit pixels grows with the label (0.1 up to 0.4), so classes differ."""
  rng = np.random.default_rng(0)
  k = len(class_probs)
  y = rng.choice(k, size=n, p=list(class_probs)).astype(np.int32)
  x = (rng.random((n, 28, 28, 1)) < 0.1 + 0.3 * y[:, None, None, None]
       / (k - 1)).astype(np.float32)
  return x, y


# A StyleGAN2 small enough to build and run in a second.
TINY_G = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
              mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=64, channel_max=8))


def random_generator(seed: int = 0):
  """Random NumPy weights on abstract shapes: `Generator(rngs=...)` compiles
  every initialiser separately, which takes a minute on a busy CPU."""
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  from flax import nnx, traverse_util
  from sca_jax.convert import import_stylegan2
  sg2 = import_stylegan2()
  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: sg2.Generator(**TINY_G, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  values = {}
  for name, spec in flat.items():
    if name.endswith("resample_filter"):
      v = np.full(spec.shape, 1.0 / np.prod(spec.shape))  # a box low-pass
    elif name.endswith("w_avg"):
      v = np.zeros(spec.shape)
    elif name.endswith("bias"):
      # Official init: affine biases 1 (unit styles), other biases 0.
      v = np.full(spec.shape, 1.0 if ".affine." in name else 0.0)
    else:
      v = rng.normal(size=spec.shape)
      if ".torgb." in name:
        v = 0.3 * v  # keep images mostly inside [-1, 1] (no clip dead zone)
    values[name] = jnp.asarray(v, spec.dtype)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values, sep="."))
  return nnx.merge(graphdef, state)
