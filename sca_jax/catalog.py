"""What a run can be made of: `python -m sca_jax.main --list`.

`catalog()` lists, from the registries themselves (so plug-ins named in
`imports` appear too), every defense, attack, data set and config protocol
with a line saying what it is, then every config field with its default
(`config_lib.make_config()`, the CPU-sized SCA-on-MNIST run).
"""

from __future__ import annotations

from typing import Iterable

import ml_collections

from sca_jax import config_lib
from sca_jax.attacks import ATTACKS, attack_config
from sca_jax.data import OWN_SOURCES, PUBLISHED, SOURCES
from sca_jax.data.info import describe
from sca_jax.data.sources import TFDS_SPLITS
from sca_jax.defenses import DEFENSES
from sca_jax.registry import import_plugins


def _rows(rows: Iterable[tuple[str, str]], indent: int = 2) -> list[str]:
  """`name  text` lines with the texts in one column."""
  rows = list(rows)
  width = max((len(name) for name, _ in rows), default=0)
  return [f"{' ' * indent}{name:<{width}}  {text}".rstrip()
          for name, text in rows]


def _defenses() -> list[tuple[str, str]]:
  rows = []
  for name in DEFENSES.names():
    spec = DEFENSES.get(name)
    rows.append((name, f"{spec.description} (model {spec.model}; adaptive "
                       f"attacks: {', '.join(spec.adaptive_attacks) or '-'})"))
  return rows


def _attacks() -> list[tuple[str, str]]:
  rows = []
  for name in ATTACKS.names():
    leak = attack_config(name).get("leak", None)
    rows.append((name, f"{ATTACKS.get(name).description} (default leak: "
                       f"{leak or '-, queries no layer'})"))
  return rows


def _data_source(name: str) -> str:
  """Where data set `name` comes from when no local copy is given."""
  if name in OWN_SOURCES:
    return "your own files at config.data.path"
  if name in PUBLISHED:
    pub = PUBLISHED[name]
    return f"downloads from {pub.mirrors[0]} ({pub.licence})"
  if name in TFDS_SPLITS:
    return "TensorFlow Datasets (no direct download)"
  return "local files only, under <data_dir>/" + name


def _datasets() -> list[tuple[str, str]]:
  rows = []
  for name in SOURCES.names():
    info = describe({"name": name})
    shape = ("size from the files" if info is None else
             f"{'x'.join(map(str, info.image_shape))}, "
             f"{info.num_classes} classes")
    rows.append((name, f"{shape}; {_data_source(name)}"))
  return rows


def _protocols() -> list[tuple[str, str]]:
  return [(name, " ".join((config_lib.PROTOCOLS.get(name).__doc__ or "")
                          .split()))
          for name in config_lib.PROTOCOLS.names()]


def _fields(cfg: ml_collections.ConfigDict, prefix: str = ""
            ) -> list[tuple[str, str]]:
  """(dotted field, default) for every leaf of `cfg`: plain fields first,
  then sections, the long per-attack section last."""
  def order(key):
    return (isinstance(cfg[key], ml_collections.ConfigDict), key == "attack")
  rows = []
  for key in sorted(cfg.keys(), key=order):
    value = cfg[key]
    if isinstance(value, ml_collections.ConfigDict):
      rows += _fields(value, f"{prefix}{key}.")
    else:
      rows.append((f"{prefix}{key}", "(unset)" if value is None
                   else repr(value)))
  return rows


def catalog(imports: tuple[str, ...] = ()) -> str:
  """The text `--list` prints; `imports` are plug-in modules to include."""
  import_plugins(imports)
  sections = [
      ("Defenses (config.defense.name, or defense= of configs/experiment.py)",
       _defenses()),
      ("Attacks (config.attacks; leak: config.attack.<name>.leak)",
       _attacks()),
      ("Data sets (config.data.name, or dataset=; local copies under "
       "config.data.data_dir or $SCA_JAX_DATA_DIR, docs/data.md)",
       _datasets()),
      ("Protocols (protocol= of configs/experiment.py)", _protocols()),
      ("Config fields and defaults (configs/experiment.py with no argument; "
       "set any with --config.<field>=value)",
       _fields(config_lib.make_config(imports=imports))),
  ]
  lines = []
  for title, rows in sections:
    lines += ["", f"{title}:", *_rows(rows)]
  return "\n".join(lines[1:]) + "\n"
