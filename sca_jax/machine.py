"""What machine a figure was measured on: every result and benchmark records
it, since the CPU kind (AVX2 or AVX-512, cores) and load change timings and,
slightly, floating-point results."""

from __future__ import annotations

import os
import platform
from typing import Mapping

# glibc's malloc tunable that backs large allocations with transparent huge
# pages (glibc >= 2.35). XLA:CPU's scans allocate fresh zero-filled buffers
# every training step (the solver's residual stacks, ~365 MB per stride-1
# SCA step); with 4 KiB pages that is ~89,000 minor page faults per step.
# docs/performance.md, "Fifth round", has the A/B.
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_HUGEPAGE_GLIBC = (2, 35)


def cpu_model() -> str:
  """The CPU's model name (as lscpu shows it), or the platform's string."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average() -> float | None:
  """The 1-minute load average (None where the OS has none)."""
  try:
    return os.getloadavg()[0]
  except OSError:
    return None


def usable_cpus() -> int:
  """Cores this process may run on (its affinity): XLA:CPU sizes its thread
  pool to them, and the thread count changes float results at rounding
  level (docs/threat_models.md, "Bit-identical attacks")."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library if it is glibc, else None."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    if name == "glibc":
      major, minor = version.split(".")[:2]
      return int(major), int(minor)
  except (AttributeError, ValueError, OSError):
    pass
  return None


def malloc_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
  """Environment additions that turn on huge pages for malloc in a child
  process: `GLIBC_TUNABLES` with `HUGEPAGE_TUNABLE` where the C library is
  glibc >= 2.35, nothing elsewhere or where the user set GLIBC_TUNABLES
  already (theirs wins). glibc reads it at process start, so it only
  applies to processes started after it is set (sweep cells, bench
  workers)."""
  environ = os.environ if environ is None else environ
  version = glibc_version()
  if "GLIBC_TUNABLES" in environ or version is None or (
      version < _HUGEPAGE_GLIBC):
    return {}
  return {"GLIBC_TUNABLES": HUGEPAGE_TUNABLE}


def describe() -> dict[str, object]:
  """Platform, CPU model, core counts (machine, usable), load and malloc
  tunables, for results and reports."""
  return {"platform": platform.platform(), "processor": cpu_model(),
          "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
          "load_average": load_average(),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
