"""No-Defense, SCA and Sparse-Standard on CIFAR-10, Olivetti faces and
PneumoniaMNIST, seed 0 (9 cells), CPU-sized: each data set's config
(`config_lib.DATASETS`: the authors' lambdas, cuts, image size and, on
CIFAR-10, their CIFAR-10/CelebA architecture) with the cuts and epochs
below, attacked end to end and at the split. One seed: an anecdote, not a
result (docs/datasets.md).

  python -m sca_jax.sweep --sweep=sweeps/datasets.py --root=runs/datasets
  python -m sca_jax.sweep report --root=runs/datasets --out=results/datasets
"""

CONFIG = "configs/experiment.py:defense={defense},dataset={dataset}"

OVERRIDES = {"attacks": ("end_to_end", "split")}

AXES = {
    "dataset": [
        # 280 training images of 40 people: more epochs, smaller batches.
        {"name": "olivetti_faces", "dataset": "olivetti_faces",
         "train.epochs": 30, "train.batch_size": 32},
        # ~3,500 training images (the config's cuts: test 500, aux 1,000).
        {"name": "pneumoniamnist", "dataset": "pneumoniamnist"},
        # The authors' architecture at stride 1 costs ~2 s per batch of 64 on
        # 2 cores: 1,000 training images, 3 epochs.
        {"name": "cifar10", "dataset": "cifar10", "data.max_train": 1000,
         "data.max_test": 500, "data.max_aux": 1000},
    ],
    "defense": ["no_defense", "sca", "sparse_standard"],
    "seed": [0],
}
