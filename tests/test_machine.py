"""sca_jax.machine: the CPU model and load recorded beside every figure."""

import os

from sca_jax import machine


def test_describe_names_the_cpu_and_cores():
  info = machine.describe()
  assert isinstance(info["processor"], str) and info["processor"]
  assert info["cpus"] == os.cpu_count()
  load = info["load_average"]
  assert load is None or load >= 0


def test_cpu_model_is_lscpus_model_name_on_linux():
  if not os.path.exists("/proc/cpuinfo"):
    return
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    names = [l.split(":", 1)[1].strip() for l in f
             if l.startswith("model name")]
  if names:
    assert machine.cpu_model() == names[0]
