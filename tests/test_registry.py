"""sca_jax.registry: unknown names list what is allowed, a name registers
once, and a tuple typed on the command line without quotes gets a hint."""

import pytest

from sca_jax.registry import Registry


def _registry() -> Registry:
  r = Registry("attack")
  r.register("split")(object())
  r.register("end_to_end")(object())
  return r


def test_unknown_name_lists_the_allowed_ones():
  with pytest.raises(ValueError, match=r"unknown attack 'nope' \(config "
                     r"field attacks\); allowed: \['end_to_end', 'split'\]$"):
    _registry().get("nope", field="attacks")


def test_a_name_registers_once():
  r = _registry()
  with pytest.raises(ValueError, match="attack 'split' is registered twice"):
    r.register("split")(object())


def test_unquoted_tuple_from_the_command_line_gets_a_hint():
  # `--config.attacks=(end_to_end,)` reaches the registry as one string.
  with pytest.raises(ValueError, match=r"quote each name: "
                     r"\"--config.attacks=\('a','b'\)\""):
    _registry().get("(end_to_end,)", field="attacks")
