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
"""

# Config spec of every cell; {dataset} and {defense} come from the axes.
CONFIG = ("configs/experiment.py:defense={defense},dataset={dataset},"
          "protocol=faithful")

OVERRIDES = {}

DEFENSES = ["no_defense", "dp_sgd", "bido", "mid", "laplace_noise",
            "gaussian_noise", "gan_augment", "gong_gan", "gong_gan_pp"]

AXES = [
    {"dataset": ["mnist"], "defense": DEFENSES, "seed": [0, 1, 2]},
    {"dataset": ["fashion_mnist"], "defense": DEFENSES, "seed": [0]},
]
