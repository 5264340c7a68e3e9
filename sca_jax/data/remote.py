"""Downloads, TFDS data sources and the local cache of decoded arrays.

Everything that touches the network or `~/.cache/sca_jax` lives here, so the
readers stay pure and the tests can point the cache at a temporary folder
(`SCA_JAX_CACHE_DIR`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sca_jax import cache

CACHE_ENV = cache.CACHE_ENV  # the one cache root (sca_jax.cache)

# Replaces every publisher URL by <this>/<data set name>/<file name>: a local
# mirror, or the test's HTTP server.
DOWNLOAD_URL_ENV = "SCA_JAX_DOWNLOAD_URL"
# Bump when a reader's output for the same files changes, to drop old caches.
CACHE_VERSION = 1
_CHUNK = 1 << 20


def cache_dir() -> Path:
  """The package's cache root (`sca_jax.cache`: `$SCA_JAX_CACHE_DIR`, else
  `~/.cache/sca_jax`)."""
  return cache.cache_dir()


def file_fingerprint(path: Path) -> str:
  """sha256 of a file's first MiB and its size: cheap, survives copying."""
  path = Path(path)
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    digest.update(f.read(_CHUNK))
  digest.update(str(path.stat().st_size).encode())
  return digest.hexdigest()


def files_fingerprint(paths: Sequence[Path], root: Path) -> str:
  """sha256 over the relative names, sizes and mtimes of many files."""
  digest = hashlib.sha256()
  for p in paths:
    stat = Path(p).stat()
    rel = os.path.relpath(p, root)
    digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def cached_arrays(
    stem: str, key: str, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
  """Returns `build()`, saved as / loaded from an .npz in the cache dir.

  A cache that cannot be read or written is ignored (read-only home, full
  disk): the data is then decoded again, never wrong.
  """
  digest = hashlib.sha256(f"{CACHE_VERSION}:{key}".encode()).hexdigest()
  path = cache_dir() / f"{stem}-{digest[:20]}.npz"
  if path.exists():
    try:
      # allow_pickle=False: a cache file must never be able to run code.
      with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass
  arrays = build()
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)  # Atomic: readers never see half a file.
  except OSError:
    tmp.unlink(missing_ok=True)
  return arrays


def _digest(path: Path, algorithm: str) -> str:
  h = hashlib.new(algorithm)
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def _progress(url: str, done: int, total: int | None, final: bool = False):
  size = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f}" if total else "")
  end = "\n" if final else "\r"
  print(f"downloading {url}: {size} MB", end=end, file=sys.stderr, flush=True)


def download(url: str, dest: Path, md5: str | None = None,
             sha256: str | None = None, timeout: float = 60.0) -> Path:
  """Downloads `url` to `dest` unless a file with the right checksum is there.

  The bytes go to a temporary file beside `dest` that is renamed only once
  complete and verified, so an interrupted or corrupt download never leaves
  a file that a later run would read.

  Raises:
    ConnectionError: the download failed or stopped early (e.g. no network);
      the message says where to put the file by hand.
    ValueError: the downloaded file has the wrong checksum (nothing is kept).
  """
  dest = Path(dest)
  algorithm, expected = ("md5", md5) if md5 else ("sha256", sha256)
  if dest.exists() and (expected is None or
                        _digest(dest, algorithm) == expected):
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(
        tmp, "wb") as f:
      total = response.headers.get("Content-Length") if hasattr(
          response, "headers") else None
      total = int(total) if total else None
      done, shown = 0, 0
      while chunk := response.read(_CHUNK):
        f.write(chunk)
        done += len(chunk)
        if done - shown >= 8 * _CHUNK:
          _progress(url, done, total)
          shown = done
      _progress(url, done, total, final=True)
      if total is not None and done != total:
        raise ConnectionError(f"got {done} of {total} bytes")
  except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
    tmp.unlink(missing_ok=True)
    raise ConnectionError(
        f"could not download {url} to {dest}: {e}. If this machine is "
        f"offline, fetch the file elsewhere, put it under "
        f"<data_dir>/<data set name>/ and set config.data.data_dir or "
        f"SCA_JAX_DATA_DIR to <data_dir> (docs/data.md).") from e
  if expected is not None:
    actual = _digest(tmp, algorithm)
    if actual != expected:
      tmp.unlink(missing_ok=True)
      raise ValueError(
          f"{url} downloaded with {algorithm} {actual}, expected {expected}: "
          f"the file is corrupt or not the published one; nothing was saved "
          f"to {dest}. Retry, or check {DOWNLOAD_URL_ENV} if it is set.")
  os.replace(tmp, dest)
  return dest


def tfds_examples(
    name: str, splits: Sequence[str], convert: Callable[[dict[str, Any]],
                                                        Any] | None = None,
    data_dir: str | None = None, batch: int = 1024
) -> list[list[Any]]:
  """Every example of `splits` of TFDS data set `name`, via `tfds.data_source`.

  Only the array_record data source works without TensorFlow (`tfds.load`
  needs it). `convert` maps an example to what to keep (e.g. a resized image
  and a label) so large sets are not held twice.
  """
  import tensorflow_datasets as tfds  # Slow import; only this path needs it.

  try:
    sources = tfds.data_source(
        name, split=list(splits), data_dir=data_dir, download=True,
        builder_kwargs={"file_format": "array_record"})
  except Exception as e:  # TFDS raises many types; all mean "not available".
    raise RuntimeError(
        f"tfds.data_source({name!r}) failed: {e}. Preparing a TFDS data set "
        f"needs TensorFlow: pip install -e '.[tfds-prepare]'. To use local "
        f"files instead, set config.data.data_dir or SCA_JAX_DATA_DIR to a "
        f"folder holding {name}/ in the published format "
        f"(docs/data.md).") from e
  convert = convert or (lambda example: example)
  out = []
  for source in sources:
    examples = []
    for start in range(0, len(source), batch):
      keys = list(range(start, min(start + batch, len(source))))
      if hasattr(source, "__getitems__"):
        items = source.__getitems__(keys)
      else:
        items = [source[k] for k in keys]
      examples.extend(convert(item) for item in items)
    out.append(examples)
  return out
