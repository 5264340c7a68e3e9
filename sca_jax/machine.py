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


def describe() -> dict[str, object]:
  """Platform, CPU model, core count and load, for results and reports."""
  return {"platform": platform.platform(), "processor": cpu_model(),
          "cpus": os.cpu_count(), "load_average": load_average()}
