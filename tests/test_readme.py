"""Every command in README.md's ```bash blocks is exercised here.

The quick ones run for real (`--list`, a sweep's `--dry_run`, the opening
run command on tiny settings, `python -c`); the others are parsed as their
program parses them: `sca_jax.main` commands load their config spec with
the overrides (`config_flags`) and pass `validation.validate`, sweep
commands go through the sweep's own argument parser, scripts get `--help`
and every flag named must be in it, `pip` extras must exist in
pyproject.toml. A command no rule covers fails the test, as does one that
names a file, flag or config that does not exist.
"""

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from sca_jax import catalog, sweep, validation

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The README's stand-in for the user's data folder; mapped to `data_dir`
# (the published files, or the small set the tests draw).
DATA_PLACEHOLDER = "/path/to/data"
# Appended to the opening run command: a run of seconds, not an hour.
TINY = (
    "--config.data.max_train=64", "--config.data.max_test=64",
    "--config.data.max_aux=64", "--config.defense.features=(4,6)",
    "--config.defense.hidden=(32,)", "--config.defense.num_iters=3",
    "--config.train.epochs=1", "--config.train.batch_size=32",
    "--config.train.eval_batch_size=64", "--config.train.log_every=1",
    "--config.attacks=('end_to_end',)",
    "--config.attack.end_to_end.epochs=1",
    "--config.attack.end_to_end.num_images=16",
    "--config.attack.end_to_end.grid_per_group=2",
    "--config.eval_classifier.epochs=1",
    "--config.solver_gap.reference_iters=50",
    "--config.solver_gap.num_images=32")


def readme_commands(text: str) -> list[str]:
  """The commands of every ```bash block: continuation lines joined,
  comments and blank lines dropped, `a && b` split."""
  commands = []
  for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split(" #")[0].strip()
      if line and not line.startswith("#"):
        commands += [c.strip() for c in line.split("&&")]
  return commands


def _split(command: str) -> tuple[dict[str, str], list[str]]:
  """(leading VAR=value assignments, argv)."""
  words = shlex.split(command)
  env = {}
  while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
    key, _, value = words.pop(0).partition("=")
    env[key] = value
  return env, words


COMMANDS = readme_commands(README.read_text())
OPENING = readme_commands(README.read_text().split("\n## ")[0])


def test_readme_opens_with_install_run_and_the_ci_test_command():
  ci_test = [l.strip() for l in (ROOT / ".ci" / "run").read_text()
             .splitlines() if "pytest" in l]
  install, run, test = (OPENING[:3], OPENING[3], OPENING[4])
  assert install[-1].startswith("pip install")
  assert run.startswith("python -m sca_jax.main --config=")
  assert [test] == ci_test
  assert not any("../shared" in c for c in install + [run])  # users lack it


@pytest.mark.parametrize("name", ["verdict", "datasets"])
def test_results_section_has_the_sweep_report_markers(name):
  """`python -m sca_jax.sweep report --readme=README.md --name=<name>`
  rewrites what lies between these (an error if they are missing)."""
  text = README.read_text()
  begin, end = f"<!-- sweep:{name}:begin -->", f"<!-- sweep:{name}:end -->"
  assert text.count(begin) == text.count(end) == 1
  assert text.index(begin) < text.index(end)


def _main_flags(argv: list[str]) -> flags.FlagValues:
  """A fresh parser of `argv` with the flags `sca_jax.main` defines, so that
  a README command naming any other flag fails here as it would there."""
  from sca_jax import main  # pylint: disable=g-import-not-at-top
  defined = {f.name for f in flags.FLAGS.get_flags_for_module(main.__name__)}
  assert defined == {"config", "workdir", "debug", "list"}, defined
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  flags.DEFINE_bool("debug", False, "", flag_values=fv)
  flags.DEFINE_bool("list", False, "", flag_values=fv)
  return fv


def _check_main(args: list[str], data_dir: str) -> None:
  argv = ["main"] + [a.replace(DATA_PLACEHOLDER, data_dir) for a in args]
  fv = _main_flags(argv)
  fv(argv)
  if fv.list:
    assert "Defenses" in catalog.catalog()
    return
  assert fv.config is not None and fv.workdir, args
  validation.validate(fv.config, warn=lambda line: None)


def _check_paths(args: list[str]) -> None:
  """Files a command names (config files, sweep files, --readme)."""
  for arg in args:
    value = arg.partition("=")[2] or arg
    path = value.split(":")[0]
    if path.endswith((".py", ".md", ".txt")):
      assert (ROOT / path).is_file(), f"{arg}: no file {path}"


def _check_script(args: list[str]) -> None:
  script = ROOT / args[0]
  assert script.is_file(), f"no script {args[0]}"
  done = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert done.returncode == 0, done.stderr
  for arg in args[1:]:
    if arg.startswith("--"):
      assert arg.split("=")[0] in done.stdout, f"{args[0]}: no flag {arg}"


def _check_pip(args: list[str]) -> None:
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  assert args[:1] == ["install"], args
  for i, arg in enumerate(args):
    if arg == "-c":
      assert (ROOT / args[i + 1]).is_file(), args[i + 1]
    match = re.fullmatch(r"\.(?:\[(.*)\])?", arg)
    if match and match.group(1):
      for extra in match.group(1).split(","):
        assert extra in extras, f"pip extra {extra!r} not in pyproject.toml"


def _check_pytest(command: str, args: list[str]) -> None:
  if command == OPENING[4]:
    return  # the CI command itself (see the test above)
  markers = tomllib.loads((ROOT / "pyproject.toml").read_text())[
      "tool"]["pytest"]["ini_options"]["markers"]
  assert args[0] == "tests", args
  for i, arg in enumerate(args):
    if arg == "-m":
      for word in re.findall(r"\w+", args[i + 1]):
        assert word in ("not", "and", "or") or any(
            m.startswith(word + ":") for m in markers), word


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command, data_dir, monkeypatch, tmp_path):
  monkeypatch.chdir(ROOT)
  _, argv = _split(command)
  prog, args = argv[0], argv[1:]
  _check_paths(args)
  if prog in (".", "source"):
    assert args == [".venv/bin/activate"], command
  elif prog == "pip":
    _check_pip(args)
  elif prog in ("python", "python3") and args[:2] == ["-m", "venv"]:
    assert args[2:] == [".venv"], command
  elif prog == "python" and args[:2] == ["-m", "pytest"]:
    _check_pytest(command, args[2:])
  elif prog == "python" and args[:2] == ["-m", "sca_jax.main"]:
    _check_main(args[2:], data_dir)
  elif prog == "python" and args[:2] == ["-m", "sca_jax.sweep"]:
    parsed = sweep.parse_args(args[2:])
    if parsed.dry_run:  # runs nothing; lists the cells
      root = [a for a in args if a.startswith("--root=")][0]
      assert sweep.main([a if a != root else f"--root={tmp_path}"
                         for a in args[2:]]) == 0
  elif prog == "python" and args[:1] == ["-c"]:
    subprocess.run([sys.executable, *args], check=True, timeout=120)
  elif prog == "python" and args[0].startswith("scripts/"):
    _check_script(args)
  else:
    pytest.fail(f"README command not covered by tests/test_readme.py: "
                f"{command}")


def test_opening_run_command_runs_on_tiny_settings(data_dir, tmp_path):
  """The README's run command, as written plus TINY overrides, to the end."""
  _, argv = _split(OPENING[3])
  argv = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path}"
          for a in argv]
  env = dict(os.environ, PYTHONPATH=str(ROOT), SCA_JAX_DATA_DIR=data_dir)
  done = subprocess.run([sys.executable, *argv[1:], *TINY], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  for name in ("config.json", "train_metrics.jsonl", "results.json",
               "attacks/end_to_end.png"):
    assert (tmp_path / name).is_file(), name
  assert (tmp_path / "checkpoints").is_dir()
  assert "attack 1 of 1: end_to_end" in done.stdout
