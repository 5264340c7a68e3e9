"""scripts/train_generator.py's flags (the loop itself: test_generator_*)."""

import argparse
import runpy
from pathlib import Path

import pytest

_SCRIPT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts"
                             / "train_generator.py"), run_name="not_main")


@pytest.mark.parametrize("text, value", [("false", False), ("False", False),
                                         ("0", False), ("true", True),
                                         ("1", True)])
def test_bool_flags_read_false_as_false(text, value):
  assert _SCRIPT["_bool"](text) is value


def test_bool_flags_refuse_other_words():
  with pytest.raises(argparse.ArgumentTypeError, match="true or false"):
    _SCRIPT["_bool"]("maybe")
