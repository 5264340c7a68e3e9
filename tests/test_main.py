"""The entry point's user errors: one line, exit status 2, before any work.

(A whole run through `python -m sca_jax.main`, its overrides, a corrupt
checkpoint and --debug: tests/test_experiment.py.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from sca_jax import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "sca_jax.main", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_flag_error_keeps_the_flag_and_the_last_line_of_a_traceback():
  message = ("flag --config=configs/experiment.py:defense=x: Error whilst "
             "parsing config file: Traceback (most recent call last):\n"
             '  File "configs/experiment.py", line 18, in get_config\n'
             "    return make_config()\n"
             "ValueError: unknown defense 'x'; allowed: ['sca']\n")
  assert main.flag_error(message) == (
      "flag --config=configs/experiment.py:defense=x: ValueError: unknown "
      "defense 'x'; allowed: ['sca'] (--debug shows the traceback)")
  plain = "flag --config.train.epochs=x: could not parse"
  assert main.flag_error(plain) == plain


@pytest.mark.parametrize("args, says", [
    (("--config=configs/experiment.py:defense=scaa",),
     "unknown defense 'scaa' (config field defense.name); allowed:"),
    (("--config=configs/nope.py",),
     "--config=configs/nope.py: cannot load the config file ([Errno 2] No "
     "such file or directory"),
])
def test_bad_config_is_one_line_naming_it(tmp_path, args, says):
  out = _run(*args, f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
  assert says in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()  # nothing started


def test_debug_keeps_the_traceback_of_a_config_error(tmp_path):
  out = _run("--config=configs/experiment.py:defense=scaa",
             f"--workdir={tmp_path}", "--debug")
  assert out.returncode != 0 and "Traceback" in out.stderr
