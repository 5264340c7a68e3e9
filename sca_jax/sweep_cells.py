"""Sweep files and the cells they expand to.

A sweep file is a Python file with

  CONFIG = "configs/experiment.py:defense={defense},dataset={dataset}"
  OVERRIDES = {"train.epochs": 1}              # optional, every cell
  AXES = {                                     # product of the axes, in order
      "dataset": ["mnist", "fashion_mnist"],
      "target": [{"name": "no_defense", "defense": "no_defense"},
                 {"name": "sca_lam0.1", "defense": "sca", "defense.lam": 0.1}],
      "seed": [0, 1, 2],
  }

AXES may also be a list of such dicts: the cells of each, in turn (e.g. a
full grid plus a few extra cells).

An axis value is a scalar or a dict. A key (or scalar axis) whose name
appears as `{key}` in CONFIG fills the template; every other key is a config
override (`--config.<key>=<value>`); a dict's "name" is its label. Each cell
is one run of `python -m sca_jax.main --config=<spec> --workdir=<root>/<cell>
--config.<field>=<value>...`, in the directory `<label>/<label>/...` (one
level per axis: `mnist/sca_lam0.1/seed0`), stable as long as the labels are.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import importlib.util
import itertools
import json
import os
import shlex
import string
from pathlib import Path
from typing import Any

CELL_FILE = "cell.json"      # the cell's labels and command, sweep-written
STATUS_FILE = "status.json"  # running / done / failed, with times
LOG_FILE = "log.txt"         # the experiment's stdout and stderr
RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One experiment run of a sweep."""
  name: str                          # relative directory, e.g. mnist/sca/seed0
  config: str                        # config spec, e.g. configs/mnist_sca.py
  overrides: tuple[tuple[str, Any], ...]
  labels: tuple[tuple[str, str], ...]  # (axis, label) in axis order

  def workdir(self, root: str | Path) -> Path:
    return Path(root) / self.name

  def argv(self, root: str | Path) -> list[str]:
    """The experiment entry's command line (without the interpreter)."""
    return ["-m", "sca_jax.main", f"--config={self.config}",
            f"--workdir={self.workdir(root)}"] + [
                f"--config.{k}={_flag_value(v)}" for k, v in self.overrides]

  def command(self, root: str | Path) -> str:
    return " ".join(["python", *(shlex.quote(a) for a in self.argv(root))])


def _flag_value(v: Any) -> str:
  # absl's config flags parse tuples/lists/numbers as Python literals.
  return repr(v) if isinstance(v, (tuple, list)) else str(v)


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  config: str
  overrides: dict[str, Any]
  axes: list[dict[str, list[Any]]]  # the union of each dict's product


def load_sweep(path: str | Path) -> Sweep:
  """Reads a sweep file; ValueError naming the variable if it is malformed."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"--sweep={path}: no such file")
  spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = getattr(module, "CONFIG", None)
  axes = getattr(module, "AXES", None)
  if not isinstance(config, str) or not config:
    raise ValueError(f"{path}: CONFIG must be a config spec string such as "
                     "'configs/experiment.py:defense={defense}', got "
                     f"{config!r}")
  groups = axes if isinstance(axes, list) else [axes]
  if not groups or not all(
      isinstance(g, dict) and g and all(
          isinstance(v, (list, tuple)) and v for v in g.values())
      for g in groups):
    raise ValueError(f"{path}: AXES must map axis names to non-empty lists "
                     f"(or be a list of such dicts), got {axes!r}")
  return Sweep(path.stem, config, dict(getattr(module, "OVERRIDES", {})),
               [{k: list(v) for k, v in g.items()} for g in groups])


def _label(axis: str, value: Any) -> str:
  """A dict's "name", else its items' labels joined: "sca_lam0.1"."""
  if isinstance(value, dict):
    if "name" in value:
      return str(value["name"])
    return "_".join(_label(k, v) for k, v in value.items())
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return f"{axis.split('.')[-1]}{value}"  # seed0, lam0.25
  return str(value)


def expand(sweep: Sweep) -> list[Cell]:
  """The cells of the product of the axes, in axis order."""
  fields = {f for _, f, _, _ in string.Formatter().parse(sweep.config) if f}
  cells, names = [], set()
  combos = [list(zip(g, values)) for g in sweep.axes
            for values in itertools.product(*g.values())]
  for combo in combos:
    template, overrides = {}, dict(sweep.overrides)
    labels = []
    for axis, value in combo:
      labels.append((axis, _label(axis, value)))
      items = ({k: v for k, v in value.items() if k != "name"}
               if isinstance(value, dict) else {axis: value})
      for k, v in items.items():
        (template if k in fields else overrides)[k] = v
    missing = fields - template.keys()
    if missing:
      raise ValueError(f"sweep {sweep.name}: CONFIG {sweep.config!r} needs "
                       f"{sorted(missing)}, which no axis sets for {labels}")
    name = "/".join(label for _, label in labels)
    if name in names:
      raise ValueError(f"sweep {sweep.name}: two cells are named {name!r}; "
                       "give the axis values distinct 'name's")
    names.add(name)
    cells.append(Cell(name, sweep.config.format(**template),
                      tuple(overrides.items()), tuple(labels)))
  return cells


def select(cells: list[Cell], patterns: str | None) -> list[Cell]:
  """The cells whose names match `patterns` (comma-separated names or
  globs, e.g. "fashion_mnist/no_defense/*,mnist/dp_sgd/seed0"), in the
  order of the patterns (then the sweep's): to run a cheap cell before an
  expensive one, or one data set's cells on a machine of their own. None or
  "" keeps every cell. A pattern that matches nothing is an error naming
  the cells there are, before anything runs."""
  if not patterns:
    return cells
  chosen: list[Cell] = []
  for pattern in [p.strip() for p in patterns.split(",") if p.strip()]:
    hits = [c for c in cells if fnmatch.fnmatchcase(c.name, pattern)]
    if not hits:
      names = ", ".join(c.name for c in cells[:6])
      raise ValueError(f"--cells: {pattern!r} matches no cell of this sweep "
                       f"({len(cells)} cells: {names}"
                       f"{', ...' if len(cells) > 6 else ''})")
    chosen += [c for c in hits if c not in chosen]
  return chosen


def load_config(spec: str, overrides: tuple[tuple[str, Any], ...] = ()):
  """The ConfigDict `python -m sca_jax.main --config=spec` would run."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  if module_spec is None:
    raise ValueError(f"config spec {spec!r}: no such config file")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for field, value in overrides:
    set_field(config, field, value)
  return config


def config_error(cell: Cell) -> str | None:
  """What `python -m sca_jax.main` would stop at in this cell's config
  (unknown name, wrong type, negative lambda...), or None: checked for every
  cell before a sweep starts any, so one bad override does not cost a job
  array of failures (SLURM) or surface hours into a local grid. The data
  folder is left to the run: a SLURM node may mount what this machine does
  not."""
  # Here, not at the top: collect and report need no JAX or registries.
  from sca_jax import validation  # pylint: disable=g-import-not-at-top
  try:
    config = load_config(cell.config, cell.overrides)
    config.data.data_dir = None
    validation.validate(config, warn=lambda _: None)  # the run warns
  except ValueError as e:  # ConfigError, unknown fields and names
    return str(e)
  except (KeyError, OSError) as e:  # a missing section, config file
    return f"{type(e).__name__}: {e}"
  return None


def set_field(config, dotted: str, value: Any) -> None:
  """config['a.b.c'] = value, parsing strings as Python literals."""
  if isinstance(value, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise ValueError(f"config field {dotted!r} does not exist")
  node[leaf] = value


def _as_json(obj: Any) -> Any:
  return json.loads(json.dumps(obj, default=str))


def is_finished(cell: Cell, root: str | Path) -> bool:
  """results.json is there and was made by exactly this cell's config.

  A cell whose config cannot be loaded here counts as not finished: running
  it reports the error in its log.
  """
  path = cell.workdir(root) / RESULTS_FILE
  if not path.exists():
    return False
  try:
    saved = json.loads(path.read_text()).get("config")
    config = load_config(cell.config, cell.overrides)
    from sca_jax import config_lib  # pylint: disable=g-import-not-at-top
    from sca_jax.defenses import read_fields  # pylint: disable=g-import-not-at-top
    base = _as_json(config_lib.base_config().to_dict())
    built = _as_json(config.to_dict())
    # Fields the cell's defense never reads (e.g. a No-Defense target's LCA
    # settings, changed by its protocol for the sparse targets) do not count,
    # nor do the settings of attacks the cell does not run.
    saved, built = ({**c, "defense": read_fields(c["defense"]),
                     "attack": {k: v for k, v in c.get("attack", {}).items()
                                if k in c.get("attacks", ())}}
                    for c in (saved, built))
  except Exception:  # pylint: disable=broad-except
    return False
  return same_config(saved, built, base)


def same_config(saved: Any, built: Any, base: Any) -> bool:
  """`saved` (a results.json's config) is what `built` would run.

  A field added to the code after the run (absent from `saved`) still
  matches when the cell sets it to the base config's default, the value
  that keeps the earlier behaviour: a new option does not invalidate every
  finished cell, and any other value means a different experiment.
  """
  if not (isinstance(saved, dict) and isinstance(built, dict)):
    return saved == built
  if set(saved) - set(built):
    return False  # a field that no longer exists: another experiment
  base = base if isinstance(base, dict) else {}
  for key, value in built.items():
    if key not in saved:
      if key not in base or value != base[key]:
        return False
    elif not same_config(saved[key], value, base.get(key)):
      return False
  return True


def state(cell: Cell, root: str | Path) -> str:
  """finished / stale / failed / running / interrupted / todo, from the
  cell's files.

  "stale": its results.json was made by another config (e.g. the sweep file
  changed since); running it again would mix two experiments in one
  workdir. "running" on this host whose process is gone is "interrupted"
  (e.g. a killed sweep); on another host (a SLURM node) it is taken as
  written.
  """
  if is_finished(cell, root):
    return "finished"
  if (cell.workdir(root) / RESULTS_FILE).exists():
    return "stale"
  try:
    status = json.loads((cell.workdir(root) / STATUS_FILE).read_text())
  except (OSError, ValueError):
    return "todo"
  if status.get("state") == "running" and status.get(
      "host") == os.uname().nodename:
    try:
      os.kill(int(status["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
      return "interrupted"
    except PermissionError:
      pass  # alive, another user's
  return status.get("state", "todo")


def log_tail(cell: Cell, root: str | Path, lines: int = 15) -> str:
  path = cell.workdir(root) / LOG_FILE
  if not path.exists():
    return "(no log)"
  return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# What `collect` copies of a finished cell: small files only (no checkpoints).
COLLECT_PATTERNS = (RESULTS_FILE, "config.json", CELL_FILE, STATUS_FILE,
                    "umap_*.png", "attacks/*.png")


def collect(root: str | Path, out: str | Path,
            patterns: tuple[str, ...] = COLLECT_PATTERNS) -> list[Path]:
  """Copies each finished run's small files under `root` to `out/<cell>/`.

  A run is finished when it has a results.json; the files matching
  `patterns` (by default its results, config, cell and status records and
  pictures; never checkpoints) are copied, so the grid can be reported
  (`sweep report --root=<out>`) and resumed elsewhere. Returns the files
  that were new or changed.
  """
  root, out = Path(root), Path(out)
  if not root.is_dir():
    raise ValueError(f"--root={root}: no such directory")
  copied = []
  for results in sorted(root.rglob(RESULTS_FILE)):
    cell = results.parent
    if any(part.startswith(".") for part in cell.relative_to(root).parts):
      continue  # submitit's folders
    for pattern in patterns:
      for src in sorted(cell.glob(pattern)):
        dst = out / src.relative_to(root)
        data = src.read_bytes()
        if dst.exists() and dst.read_bytes() == data:
          continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        copied.append(dst)
  return copied
