"""`--list`: every registered component with its description, every config
field with its default; plug-ins named in imports listed too."""

import os
import re
import subprocess
import sys
from pathlib import Path

from sca_jax import catalog, config_lib
from sca_jax.attacks import ATTACKS, attack_config
from sca_jax.data import SOURCES
from sca_jax.defenses import DEFENSES

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def _section(text: str, title: str) -> list[str]:
  """The lines of the section whose title starts with `title`."""
  block = next(b for b in text.split("\n\n") if b.startswith(title))
  return block.splitlines()[1:]


def _row(lines: list[str], name: str) -> str:
  """The text beside `name` in a listing."""
  hits = [l.split(None, 1)[1] for l in lines if l.split()[0] == name]
  assert len(hits) == 1, (name, lines)
  return hits[0]


def test_lists_every_component_with_its_description():
  text = catalog.catalog()
  defenses = _section(text, "Defenses")
  assert len(defenses) == len(DEFENSES.names())
  for name in DEFENSES.names():
    assert _row(defenses, name).startswith(DEFENSES.get(name).description)
  attacks = _section(text, "Attacks")
  assert len(attacks) == len(ATTACKS.names())
  for name in ATTACKS.names():
    row = _row(attacks, name)
    assert row.startswith(ATTACKS.get(name).description)
    leak = attack_config(name).get("leak", None)
    assert (f"default leak: {leak})" in row) == (leak is not None), row
  datasets = _section(text, "Data sets")
  assert {l.split()[0] for l in datasets} == set(SOURCES.names())
  assert _row(datasets, "mnist").startswith("28x28x1, 10 classes; downloads")
  assert _row(datasets, "cifar10").startswith("32x32x3, 10 classes;")
  assert "TensorFlow Datasets" in _row(datasets, "celeb_a")
  assert "config.data.path" in _row(datasets, "folder")
  protocols = _section(text, "Protocols")
  assert {l.split()[0] for l in protocols} == set(
      config_lib.PROTOCOLS.names())


def test_config_fields_are_make_configs_defaults():
  fields = _section(catalog.catalog(), "Config fields")
  config = config_lib.make_config()
  listed = {l.split()[0]: l.split(None, 1)[1] for l in fields}
  flat = {}

  def walk(c, prefix=""):
    for k, v in c.items():
      if hasattr(v, "items"):
        walk(v, f"{prefix}{k}.")
      else:
        flat[prefix + k] = "(unset)" if v is None else repr(v)
  walk(config)
  assert listed == flat
  assert listed["data.max_train"] == "10000"
  assert listed["data.data_dir"] == "(unset)"
  assert fields[0].split()[0] == "attacks"  # plain fields first
  assert fields[-1].split()[0].startswith("attack.")  # the long one last


def _main(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT), str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, "-m", "sca_jax.main", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_main_list_needs_no_config_and_includes_plugins():
  done = _main("--list")
  assert done.returncode == 0, done.stderr
  assert done.stdout == catalog.catalog()
  assert "toy_shift" not in done.stdout
  with_plugin = _main(
      "--list", "--config=configs/experiment.py:imports=toy_shift_defense")
  assert with_plugin.returncode == 0, with_plugin.stderr
  assert re.search(r"^  toy_shift +toy: shifted split", with_plugin.stdout,
                   re.M), with_plugin.stdout
  helped = _main("--help")  # absl's --help exits 1
  assert "python -m sca_jax.main --list` prints" in helped.stdout


def test_main_without_config_is_a_one_line_user_error():
  done = _main("--workdir=unused")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: --config and --workdir are required (--list shows the "
      "defenses, attacks, data sets and config fields; --help the flags)"]
