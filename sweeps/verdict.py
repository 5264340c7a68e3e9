"""The verdict grid: does SCA defend? MNIST and Fashion-MNIST; No-Defense,
SCA at lambda 0.1 / 0.25 / 0.5 and Sparse-Standard; seeds 0, 1, 2 (30 cells).

  python -m sca_jax.sweep --sweep=sweeps/verdict.py --root=runs/verdict
  python -m sca_jax.sweep report --root=runs/verdict --out=results/verdict
"""

# Config spec of every cell; {dataset} and {defense} come from the axes.
CONFIG = "configs/experiment.py:defense={defense},dataset={dataset}"

OVERRIDES = {}  # e.g. {"data.data_dir": "/data"}: every cell

AXES = {
    "dataset": ["mnist", "fashion_mnist"],
    "target": [
        {"name": "no_defense", "defense": "no_defense"},
        {"name": "sca_lam0.1", "defense": "sca", "defense.lam": 0.1},
        {"name": "sca_lam0.25", "defense": "sca", "defense.lam": 0.25},
        {"name": "sca_lam0.5", "defense": "sca", "defense.lam": 0.5},
        {"name": "sparse_standard", "defense": "sparse_standard"},
    ],
    "seed": [0, 1, 2],
}
