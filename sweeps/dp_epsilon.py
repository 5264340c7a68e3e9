"""Leakage against the DP-SGD privacy budget: DP-SGD on MNIST at four noise
multipliers (epsilon from the RDP accountant, in each results.json) beside
No-Defense; seeds 0, 1, 2 (15 cells).

  python -m sca_jax.sweep --sweep=sweeps/dp_epsilon.py --root=runs/dp_epsilon
  python -m sca_jax.sweep report --root=runs/dp_epsilon --out=results/dp_epsilon
"""

CONFIG = "configs/experiment.py:defense={defense},dataset={dataset}"

OVERRIDES = {}

AXES = {
    "dataset": ["mnist"],
    "target": [
        {"name": "no_defense", "defense": "no_defense"},
        *({"name": f"dp_sgd_noise{z}", "defense": "dp_sgd",
           "defense.dp_sgd.noise_multiplier": z}
          for z in (0.5, 0.8, 1.1, 2.0)),
    ],
    "seed": [0, 1, 2],
}
