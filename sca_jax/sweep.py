"""Runs a sweep (a grid of experiment runs) locally or on SLURM via submitit.

  python -m sca_jax.sweep --sweep=sweeps/verdict.py --root=runs/verdict
  python -m sca_jax.sweep --sweep=sweeps/verdict.py --root=runs/verdict \
      --cells='fashion_mnist/no_defense/*,fashion_mnist/sca_lam0.5/seed1'
  python -m sca_jax.sweep --sweep=sweeps/verdict.py --root=runs/verdict \
      --executor=slurm --slurm.partition=gpu --slurm.gpus_per_node=1 \
      --slurm.time=240
  python -m sca_jax.sweep report --root=runs/verdict --out=results/verdict
  python -m sca_jax.sweep collect --root=runs/verdict --out=results/verdict/cells

Each cell (see `sweep_cells`) is one ordinary run of `python -m sca_jax.main`
in its own workdir, as a subprocess of a submitit job: a crash or an
out-of-memory kill takes one cell down, not the sweep. Cells whose
results.json matches their config are skipped; the others (re)start, and an
interrupted one resumes from its checkpoints. Failed cells are listed with the
tail of their log at the end, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from sca_jax import machine, sweep_cells
from sca_jax.sweep_cells import Cell

EXECUTORS = ("local", "slurm", "debug")


def _write_status(workdir: Path, **status: Any) -> None:
  tmp = workdir / (sweep_cells.STATUS_FILE + ".tmp")
  tmp.write_text(json.dumps(status, indent=1) + "\n")
  os.replace(tmp, workdir / sweep_cells.STATUS_FILE)


def run_cell(argv: list[str], workdir: str, cwd: str,
             cores: Sequence[int] | None = None) -> dict[str, Any]:
  """Runs one cell's experiment as a subprocess (inside a submitit job).

  `cores`: CPU ids the run may use (its XLA thread pool sizes itself to
  them), so that local workers do not oversubscribe the machine. The child
  gets malloc's huge pages (`machine.malloc_env`) unless GLIBC_TUNABLES is
  set already: the same numbers, fewer page faults.
  """
  workdir_path = Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  start = time.time()
  _write_status(workdir_path, state="running", start=start,
                host=os.uname().nodename, pid=os.getpid())
  env = dict(os.environ)
  env.update(machine.malloc_env(env))
  if cores:
    n = str(len(cores))
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n,
               OPENBLAS_NUM_THREADS=n)
  preexec = ((lambda: os.sched_setaffinity(0, cores))
             if cores and hasattr(os, "sched_setaffinity") else None)
  with open(workdir_path / sweep_cells.LOG_FILE, "a") as log:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} "
              f"{sys.executable} {' '.join(argv)}\n")
    log.flush()
    rc = subprocess.call([sys.executable, *argv], cwd=cwd, env=env,
                         stdout=log, stderr=subprocess.STDOUT,
                         preexec_fn=preexec)
  duration = time.time() - start
  _write_status(workdir_path, state="done" if rc == 0 else "failed",
                returncode=rc, start=start, duration_s=duration)
  return {"returncode": rc, "duration_s": duration}


def make_executor(kind: str, folder: Path, slurm: dict[str, Any],
                  timeout_min: int):
  """A submitit executor; `slurm`: SlurmExecutor parameters (sbatch names)."""
  import submitit  # pylint: disable=g-import-not-at-top
  if kind == "local":
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=timeout_min)
  elif kind == "debug":
    ex = submitit.DebugExecutor(folder=folder)
  elif kind == "slurm":
    ex = submitit.SlurmExecutor(folder=folder)
    params = {"time": timeout_min, "job_name": "sca_sweep", **slurm}
    try:
      ex.update_parameters(**params)
    except ValueError as e:
      raise ValueError(f"--slurm.*: {e}") from None
  else:
    raise ValueError(f"--executor={kind!r}; allowed: {EXECUTORS}")
  return ex


def slurm_setup_lines(cells: list[Cell], root: Path) -> list[str]:
  """Comment lines naming each array task's cell and command (the sbatch
  script runs submitit's pickled `run_cell`, which runs exactly these)."""
  return [f"# cell {i} {c.name}: {c.command(root)}"
          for i, c in enumerate(cells)]


class Progress:
  """Counts and an ETA from the mean duration of the cells finished now."""

  def __init__(self, total: int, skipped: int, workers: int):
    self.total, self.skipped, self.workers = total, skipped, workers
    self.done = self.failed = self.running = 0
    self.durations: list[float] = []
    self.t0 = time.time()

  def line(self) -> str:
    left = self.total - self.skipped - self.done - self.failed - self.running
    eta = "?"
    if self.durations:
      mean = sum(self.durations) / len(self.durations)
      secs = mean * (left + self.running / 2) / max(1, self.workers)
      # A duration, then the clock time it ends: grids outlast a day.
      m, sec = divmod(int(secs), 60)
      h, m = divmod(m, 60)
      left_str = f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"
      eta = f"{left_str} (at {time.strftime('%a %H:%M', time.localtime(time.time() + secs))})"
    return (f"[sweep {time.strftime('%H:%M:%S')}] done {self.done} "
            f"(+{self.skipped} earlier) / running {self.running} / failed "
            f"{self.failed} / left {left} of {self.total}; ETA {eta}")


def default_workers(threads_per_cell: int) -> int:
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  return max(1, cores // threads_per_cell)


def _core_slots(workers: int, threads: int) -> list[list[int] | None]:
  if not hasattr(os, "sched_getaffinity"):
    return [None] * workers
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < workers * threads:  # oversubscribed on purpose: no pinning
    return [None] * workers
  return [cores[i * threads:(i + 1) * threads] for i in range(workers)]


def run_sweep(cells: list[Cell], root: Path, executor: str = "local",
              workers: int | None = None, threads_per_cell: int = 1,
              slurm: dict[str, Any] | None = None,
              timeout_min: int = 7 * 24 * 60,
              wait: bool = True, poll_s: float = 2.0,
              log=print) -> dict[str, str]:
  """Runs the unfinished cells; returns {cell name: error} of failed ones."""
  root, slurm = Path(root), slurm or {}
  states = {c.name: sweep_cells.state(c, root) for c in cells}
  todo = [c for c in cells if states[c.name] != "finished"]
  stale = [c.name for c in todo if states[c.name] == "stale"]
  if stale:  # before any cell.json is rewritten or any cell runs
    raise ValueError(
        f"{len(stale)} cell(s) under {root} hold a results.json this sweep "
        "would not make (another config, e.g. the sweep changed since they "
        f"ran, or one that does not load here): {', '.join(stale)}. "
        "Move each workdir aside (e.g. to a superseded/ folder) to run it "
        "again, or leave it out with --cells; nothing was run or changed.")
  invalid = {c.name: e for c in todo if (e := sweep_cells.config_error(c))}
  if invalid:
    raise ValueError(
        f"{len(invalid)} cell(s) have a config their run would refuse; "
        "nothing was run or changed: " + "; ".join(
            f"{name}: {e}" for name, e in invalid.items()))
  workers = workers or default_workers(threads_per_cell)
  parallel = {"local": workers, "debug": 1}.get(executor, len(todo) or 1)
  progress = Progress(len(cells), len(cells) - len(todo), parallel)
  log(f"{len(cells)} cells, {len(cells) - len(todo)} finished earlier, "
      f"{len(todo)} to run ({executor}"
      + (f", {workers} workers x {threads_per_cell} threads)"
         if executor == "local" else ")"))
  if not todo:
    return {}
  ex = make_executor(executor, root / ".submitit", slurm, timeout_min)
  cwd = os.getcwd()
  for c in todo:  # the sweep's record of what this cell runs
    c.workdir(root).mkdir(parents=True, exist_ok=True)
    (c.workdir(root) / sweep_cells.CELL_FILE).write_text(json.dumps({
        "name": c.name, "labels": dict(c.labels), "config": c.config,
        "overrides": dict(c.overrides), "command": c.command(root)},
        indent=1, default=str) + "\n")

  def submit(c: Cell, cores=None):
    return ex.submit(run_cell, c.argv(root), str(c.workdir(root)), cwd, cores)

  if executor == "slurm":
    ex.update_parameters(setup=list(slurm.get("setup", []))
                         + slurm_setup_lines(todo, root))
    with ex.batch():  # one job array
      jobs = [submit(c) for c in todo]
    log(f"submitted SLURM job array {jobs[0].job_id.split('_')[0]} "
        f"({len(jobs)} cells); sbatch script in {root / '.submitit'}")
    if not wait:
      return {}
    pending, running = [], dict(zip(jobs, todo))
  else:
    pending, running = list(todo), {}
  slots = (_core_slots(workers, threads_per_cell) if executor == "local"
           else [None])
  free = list(range(len(slots)))
  slot_of: dict[Any, int] = {}
  failed: dict[str, str] = {}
  last = (None, 0.0)  # counts last printed, and when
  while pending or running:
    while pending and free:
      slot = free.pop(0)
      c = pending.pop(0)
      job = submit(c, slots[slot])
      running[job], slot_of[job] = c, slot
      if executor == "debug":
        job.result()  # the debug executor runs the job here, in-process
    for job in [j for j in running if j.done()]:
      c = running.pop(job)
      if job in slot_of:
        free.append(slot_of.pop(job))
      try:
        outcome = job.result()
        ok = outcome["returncode"] == 0 and sweep_cells.is_finished(c, root)
        error = "" if ok else f"exit status {outcome['returncode']}"
        if ok:  # quick failures would make the ETA optimistic
          progress.durations.append(outcome["duration_s"])
      except Exception as e:  # pylint: disable=broad-except
        ok, error = False, f"job failed: {type(e).__name__}: {e}"
      if ok:
        progress.done += 1
      else:
        progress.failed += 1
        failed[c.name] = (error + "\n" + sweep_cells.log_tail(c, root))
        log(f"FAILED {c.name}: {error}")
    progress.running = len(running)
    counts = (progress.done, progress.failed, progress.running)
    if counts != last[0] or time.time() - last[1] > 300:
      log(progress.line())
      last = (counts, time.time())
    if running:
      time.sleep(poll_s)
  log(progress.line())
  return failed


def _parse_value(v: str) -> Any:
  try:
    return int(v)
  except ValueError:
    return v


def parse_args(argv: list[str]) -> argparse.Namespace:
  ap = argparse.ArgumentParser(
      prog="python -m sca_jax.sweep", description=__doc__.split("\n")[0],
      epilog="--slurm.<name>=<value>: any submitit SlurmExecutor parameter "
      "(partition, gpus_per_node, cpus_per_task, mem, account, qos, "
      "array_parallelism, ...); --slurm.setup=LINE is repeatable.")
  ap.add_argument("command", nargs="?", default="run",
                  choices=("run", "report", "collect"),
                  help="run the sweep (default), only write the report, or "
                  "collect finished cells' small files into --out")
  ap.add_argument("--sweep", help="sweep file (sweeps/*.py)")
  ap.add_argument("--root", required=True, help="directory of the cells")
  ap.add_argument("--cells", default=None,
                  help="only these cells, in this order: comma-separated "
                  "names or globs (fashion_mnist/no_defense/*)")
  ap.add_argument("--dry_run", action="store_true",
                  help="list the cells, their state and command; run nothing")
  ap.add_argument("--executor", default="local", choices=EXECUTORS)
  ap.add_argument("--workers", type=int, default=None,
                  help="local: cells at once (default cores // threads)")
  ap.add_argument("--threads_per_cell", type=int, default=1,
                  help="local: CPU cores pinned to each cell")
  ap.add_argument("--timeout_min", type=int, default=7 * 24 * 60,
                  help="per cell; on SLURM the job's --time (in minutes)")
  ap.add_argument("--no_wait", action="store_true",
                  help="slurm: submit and exit (rerun with --dry_run to see "
                       "progress, or run `report` when done)")
  ap.add_argument("--out", help="report: output folder (results/<name>)")
  ap.add_argument("--readme", help="report: file whose section between "
                  "<!-- sweep:NAME:begin/end --> markers is rewritten")
  ap.add_argument("--name", help="report: NAME of the README section "
                  "(default: the --out folder's name)")
  ap.add_argument("--grids", action="store_true",
                  help="report: copy each cell's attack picture grids")
  # --slurm.* first: argparse takes an unknown "--x=a b" for a positional.
  slurm_items = [a for a in argv if a.startswith("--slurm.")]
  args = ap.parse_args([a for a in argv if a not in slurm_items])
  args.slurm = {}
  for item in slurm_items:
    key, eq, value = item.partition("=")
    if not eq:
      ap.error(f"{item!r}: SLURM parameters are --slurm.<sbatch parameter>="
               "<value>, e.g. --slurm.partition=gpu")
    name = key[len("--slurm."):]
    if name == "setup":  # shell lines before each task, repeatable
      args.slurm.setdefault("setup", []).append(value)
    else:
      args.slurm[name] = _parse_value(value)
  if args.command == "run" and not args.sweep:
    ap.error("--sweep is required to run a sweep")
  if args.command in ("report", "collect") and not args.out:
    ap.error(f"{args.command} needs --out (e.g. results/verdict)")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  root = Path(args.root)
  if args.command in ("report", "collect"):
    if not root.is_dir():
      print(f"error: --root={root}: no such directory", file=sys.stderr)
      return 2
    if not any(root.rglob(sweep_cells.RESULTS_FILE)):
      print(f"error: --root={root}: no finished cell (results.json) under it",
            file=sys.stderr)
      return 2
  if args.command == "report":
    from sca_jax import report  # pylint: disable=g-import-not-at-top
    report.write_report(root, Path(args.out), readme=args.readme,
                        section=args.name, grids=args.grids)
    return 0
  if args.command == "collect":
    copied = sweep_cells.collect(root, Path(args.out))
    print(f"collected {len(copied)} new or changed files into {args.out}")
    return 0
  try:
    cells = sweep_cells.select(
        sweep_cells.expand(sweep_cells.load_sweep(args.sweep)), args.cells)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    for c in cells:
      print(f"{sweep_cells.state(c, root):11s} {c.name}\n"
            f"            {c.command(root)}")
    print(f"{len(cells)} cells")
    return 0
  try:
    failed = run_sweep(cells, root, args.executor, args.workers,
                       args.threads_per_cell, args.slurm, args.timeout_min,
                       wait=not args.no_wait)
  except ValueError as e:  # stale cells, a bad --executor / --slurm.*
    print(f"error: {e}", file=sys.stderr)
    return 2
  for name, error in failed.items():
    print(f"\n--- FAILED {name} ({root / name / sweep_cells.LOG_FILE}):\n"
          f"{error}")
  if failed:
    print(f"\n{len(failed)} of {len(cells)} cells failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
