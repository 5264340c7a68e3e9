"""The eight baseline defenses beside No-Defense on MNIST, seeds 0, 1, 2
(27 cells), then Fashion-MNIST seed 0 (9 cells: one seed, as issue 12
allows when the CPU runs short; a single seed is an anecdote, and the report
says n=1), each with the standard and its adaptive attacks, at the faithful
protocol (`config_lib.faithful_protocol`; run after sweeps/verdict.py).

  python -m sca_jax.sweep --sweep=sweeps/baselines.py --root=runs/verdict
  python -m sca_jax.sweep report --root=runs/verdict --out=results/verdict

Run it in the verdict grid's root: its No-Defense cells are the verdict's
(same config, same path; Fashion-MNIST seed 0 too), so the sweep finds them
finished and skips them (`sweep_cells.is_finished` compares the whole
config), and one report holds every target beside the same No-Defense seeds.

The baselines leave out the authors' replayed loop (`end_to_end_replay`,
`split_replay`), as the verdict's lambda and Sparse-Standard cells do:
issue 12 asks for it on No-Defense and SCA, and it is ~25 of a cell's ~70
minutes. Every threat model and each defense's adaptive attacks still run.
"""

from sca_jax.defenses import DEFENSES as _REGISTRY

# Config spec of every cell; {dataset} and {defense} come from the axes.
CONFIG = ("configs/experiment.py:defense={defense},dataset={dataset},"
          "protocol=faithful")

OVERRIDES = {}

DEFENSES = ["no_defense", "dp_sgd", "bido", "mid", "laplace_noise",
            "gaussian_noise", "gan_augment", "gong_gan", "gong_gan_pp"]

THREAT_MODELS = ("end_to_end", "split", "first_layer")


def _target(name: str) -> dict:
  if name == "no_defense":  # the verdict's cell, replays included
    return {"name": name, "defense": name}
  return {"name": name, "defense": name,
          "attacks": THREAT_MODELS + _REGISTRY.get(name).adaptive_attacks}


TARGETS = [_target(d) for d in DEFENSES]
AXES = [
    {"dataset": ["mnist"], "target": TARGETS, "seed": [0, 1, 2]},
    {"dataset": ["fashion_mnist"], "target": TARGETS, "seed": [0]},
]
