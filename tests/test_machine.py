"""sca_jax.machine: the CPU model and load recorded beside every figure."""

import os

from sca_jax import machine


def test_describe_names_the_cpu_and_cores():
  info = machine.describe()
  assert isinstance(info["processor"], str) and info["processor"]
  assert info["cpus"] == os.cpu_count()
  if hasattr(os, "sched_getaffinity"):
    assert info["usable_cpus"] == len(os.sched_getaffinity(0))
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


def test_usable_cpus_follow_the_affinity_a_sweep_worker_pins():
  if not hasattr(os, "sched_setaffinity"):
    return
  before = os.sched_getaffinity(0)
  try:
    os.sched_setaffinity(0, {min(before)})
    assert machine.usable_cpus() == 1
  finally:
    os.sched_setaffinity(0, before)
  assert machine.usable_cpus() == len(before)


def test_malloc_env_turns_on_huge_pages_on_recent_glibc_only(monkeypatch):
  monkeypatch.setattr(machine, "glibc_version", lambda: (2, 36))
  assert machine.malloc_env({}) == {
      "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  # The user's own tunables win, even an empty setting.
  assert machine.malloc_env({"GLIBC_TUNABLES": ""}) == {}
  assert machine.malloc_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
                            ) == {}
  monkeypatch.setattr(machine, "glibc_version", lambda: (2, 34))  # no hugetlb
  assert machine.malloc_env({}) == {}
  monkeypatch.setattr(machine, "glibc_version", lambda: None)  # musl, macOS
  assert machine.malloc_env({}) == {}


def test_glibc_version_reads_the_running_c_library():
  version = machine.glibc_version()
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION")
  except (AttributeError, ValueError, OSError):
    name = None
  if name and name.startswith("glibc "):
    assert version == tuple(int(v) for v in name.split()[1].split(".")[:2])
  else:
    assert version is None


def test_describe_records_the_malloc_tunables(monkeypatch):
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  assert machine.describe()["glibc_tunables"] == "glibc.malloc.hugetlb=1"
