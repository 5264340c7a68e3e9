"""Per-HLO-op profile of a jitted function on CPU: where a step's time goes.

`jax.profiler.trace` records one event per executed XLA thunk (named after
its HLO instruction); the compiled module's text maps each instruction to
the JAX operation that made it (`metadata.op_name`, e.g.
`transpose(jvp(jit(solve)))/while/body/.../conv_general_dilated`). Summing
event durations per instruction, and per coarse category of the op name,
attributes the step's time without timing its parts separately.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile

import jax

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?"
                    r"metadata=\{op_name=\"([^\"]*)\"")


def hlo_op_names(compiled_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (result shape, JAX op name) from module text."""
  out = {}
  for line in compiled_text.splitlines():
    m = _INSTR.match(line)
    # A loop's or call's event spans its body's ops, which have their own.
    if m and not re.search(r" (while|call|conditional)\(", line):
      out[m.group(1)] = (m.group(2), m.group(3))
  return out


def category(op_name: str) -> str:
  """Coarse bucket of an op: pass (forward/backward) and kind of operation.

  Backward ops carry `transpose(` in their name. The sparse layers'
  convolutions are named after the jitted helpers (`_conv`, `_conv_t`);
  a convolution in the backward pass outside them is a dictionary gradient.
  FFTs (`LCAConfig.conv="fft"`) and the matrix products of the FFT path are
  their own kinds.
  """
  phase = "backward" if "transpose(" in op_name else "forward"
  last = op_name.rsplit("/", 1)[-1]
  if "jit(_conv_t)" in op_name and last in ("conv_general_dilated",
                                           "dot_general"):
    kind = "decode"
  elif "jit(_conv)" in op_name and last in ("conv_general_dilated",
                                           "dot_general"):
    kind = "encode"
  elif last == "conv_general_dilated" and phase == "backward":
    kind = "dictionary_grad"
  elif last == "fft":
    kind = "fft"
  elif last == "dot_general" and "/while/" in op_name:
    kind = "spectral_product"  # in the solver loop, outside _conv(_t)
  elif last in ("conv_general_dilated", "dot_general"):
    kind = "other_matmul"
  else:
    kind = "elementwise_copy_etc"
  loop = "in_loop" if "/while/" in op_name else "outside_loop"
  return f"{phase}/{kind}/{loop}"


def profile(fn, args, steps: int = 2, top: int = 20) -> dict:
  """Runs the compiled `fn(*args)` `steps` times under the profiler.

  Returns milliseconds per call by category and the `top` instructions
  (name, result shape, JAX op name, ms per call, executions per call).
  `fn` must be a `jax.jit` function; `args` are not donated (copy donated
  state first).
  """
  compiled = fn.lower(*args).compile()
  names = hlo_op_names(compiled.as_text())
  jax.block_until_ready(compiled(*args))
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(compiled(*args))
    path = sorted(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  per_op, calls = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get("args", {}).get("hlo_op")
    if e.get("ph") == "X" and name in names:
      per_op[name] += e.get("dur", 0) / 1e3 / steps
      calls[name] += 1
  by_cat = collections.Counter()
  for name, ms in per_op.items():
    by_cat[category(names[name][1])] += ms
  return {
      "ms_by_category": dict(by_cat.most_common()),
      "ms_total_ops": sum(per_op.values()),
      "top_ops": [{"hlo_op": n, "shape": names[n][0], "op": names[n][1],
                   "ms": ms, "calls": calls[n] // steps}
                  for n, ms in per_op.most_common(top)]}
