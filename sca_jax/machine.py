"""What machine a figure was measured on: every result and benchmark records
it, since the CPU kind (AVX2 or AVX-512, cores) and load change timings and,
slightly, floating-point results."""

from __future__ import annotations

import os
import platform


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


def describe() -> dict[str, object]:
  """Platform, CPU model, core counts (machine, usable) and load, for
  results and reports."""
  return {"platform": platform.platform(), "processor": cpu_model(),
          "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
          "load_average": load_average()}
