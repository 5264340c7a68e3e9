"""Where each data set is published, with the publishers' checksums.

`fetch(name)` downloads a data set's files, as published, into
`<cache dir>/downloads/<name>/`, verifying each checksum, and returns that
folder; `sources.py` then reads it with the same readers as a local copy.
Checksums are the publishers' own (the MNIST and Fashion-MNIST pages, the
CIFAR page, MedMNIST's `INFO`), as torchvision and scikit-learn use them.

`$SCA_JAX_DOWNLOAD_URL` replaces every publisher by one base URL serving
`<base>/<name>/<file>`: the offline layout of docs/data.md, so a local data
folder can be served as a mirror (the tests serve one on 127.0.0.1).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sca_jax.data import remote


@dataclasses.dataclass(frozen=True)
class PublishedFile:
  """One published file: its local name, checksum and name at the mirror."""
  name: str
  md5: str | None = None
  sha256: str | None = None
  remote_name: str | None = None  # when the mirror names it differently


@dataclasses.dataclass(frozen=True)
class Publication:
  """A data set's mirrors (tried in order), files and licence."""
  mirrors: tuple[str, ...]
  files: tuple[PublishedFile, ...]
  licence: str
  url_suffix: str = ""


def _idx_files(*md5s: str) -> tuple[PublishedFile, ...]:
  """The four IDX files of an MNIST-format set, given their MD5s in order."""
  names = [f"{split}-{part}-ubyte.gz" for split in ("train", "t10k")
           for part in ("images-idx3", "labels-idx1")]
  return tuple(PublishedFile(n, md5=m) for n, m in zip(names, md5s))


PUBLISHED: dict[str, Publication] = {
    "mnist": Publication(
        # PyTorch's copy first: the original host is often unreachable.
        # Both serve the same bytes (same MD5s).
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        _idx_files("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                   "d53e105ee54ea40749a09fcbcd1e9432",
                   "9fb629c4189551a2d022fa330f9573f3",
                   "ec29112dd5afa0611ce80d1b7f02629c"),
        "CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)"),
    "fashion_mnist": Publication(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        _idx_files("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                   "25c81989df183df01b3e8a0aad5dffbe",
                   "bef4ecab320f06d8554ea6380940ec79",
                   "bb300cfdad3c16e7a12a480ee83cd310"),
        "MIT (Zalando Research)"),
    "cifar10": Publication(
        ("https://www.cs.toronto.edu/~kriz/",),
        (PublishedFile("cifar-10-python.tar.gz",
                       md5="c58f30108f718f92721af3b95e74349a"),),
        "no licence stated; cite Krizhevsky (2009)"),
    "pneumoniamnist": Publication(
        ("https://zenodo.org/records/10519652/files/",),
        (PublishedFile("pneumoniamnist.npz",
                       md5="28209eda62fecd6e6a2d98b1501bb15f"),),
        "CC BY 4.0 (MedMNIST v2)", url_suffix="?download=1"),
    "olivetti_faces": Publication(
        # scikit-learn's copy (fetch_olivetti_faces), AT&T Laboratories
        # Cambridge's faces as one MATLAB file.
        ("https://ndownloader.figshare.com/files/",),
        (PublishedFile("olivettifaces.mat", sha256=(
            "b612fb967f2dc77c9c62d3e1266e0c73d5fca46a4b8906c18e454d41af987794"),
                       remote_name="5976027"),),
        "free for research, acknowledge AT&T Laboratories Cambridge"),
}


def urls(name: str, file: PublishedFile) -> list[str]:
  """Where to try `file` of data set `name`, in order."""
  base = os.environ.get(remote.DOWNLOAD_URL_ENV)
  if base:
    return [f"{base.rstrip('/')}/{name}/{file.name}"]
  pub = PUBLISHED[name]
  return [f"{m}{file.remote_name or file.name}{pub.url_suffix}"
          for m in pub.mirrors]


def fetch(name: str) -> Path:
  """Downloads (once) and verifies every published file of `name`.

  Returns:
    The folder holding the files under their published names.

  Raises:
    ConnectionError: no mirror answered for a file (the message names the
      last error and how to provide the file by hand).
    ValueError: a file arrived with the wrong checksum (nothing is kept).
  """
  folder = remote.cache_dir() / "downloads" / name
  for file in PUBLISHED[name].files:
    candidates = urls(name, file)
    for i, url in enumerate(candidates):
      try:
        remote.download(url, folder / file.name, md5=file.md5,
                        sha256=file.sha256)
        break
      except ConnectionError:
        if i == len(candidates) - 1:
          raise
  return folder
