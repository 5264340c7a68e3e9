"""The verdict grid: does SCA defend? MNIST and Fashion-MNIST; No-Defense,
SCA at lambda 0.1 / 0.25 / 0.5 and Sparse-Standard; seeds 0, 1, 2 (30
cells), all at the faithful protocol (`config_lib.faithful_protocol`: stride
1, the paper's architecture; every threat model, the replayed attack and the
sparse defenses' adaptive attacks; UMAP maps of the leaks).

  python -m sca_jax.sweep --sweep=sweeps/verdict.py --root=runs/verdict \\
      --workers=1 --threads_per_cell=2
  python -m sca_jax.sweep collect --root=runs/verdict --out=results/verdict/cells
  python -m sca_jax.sweep report --root=runs/verdict --out=results/verdict

The cells run in order of priority (docs/verdict.md): MNIST No-Defense and
SCA lambda 0.5, seed by seed (the paired difference needs both, the rule
needs No-Defense's seed spread), then Fashion-MNIST the same, then
the other lambdas and Sparse-Standard. Those last 18 cells leave out the
authors' replayed loop (`end_to_end_replay`, `split_replay`): issue 12 asks
for it on No-Defense and SCA, which group 1 gives on both data sets and
every seed, and it is ~28 of an SCA cell's ~130 minutes (~8 hours of the
grid). Every threat model and adaptive attack still runs on every cell.
"""

# Config spec of every cell; {dataset} and {defense} come from the axes.
CONFIG = ("configs/experiment.py:defense={defense},dataset={dataset},"
          "protocol=faithful")

OVERRIDES = {}  # e.g. {"data.data_dir": "/data"}: every cell

NO_DEFENSE = {"name": "no_defense", "defense": "no_defense"}
SCA = {lam: {"name": f"sca_lam{lam}", "defense": "sca", "defense.lam": lam}
       for lam in (0.1, 0.25, 0.5)}
# At lambda 0.1 the protocol's 50 iterations left MNIST seed 0's image layer
# 5.45% from its optimum (the brief allows 2%); on that trained dictionary
# 75 / 100 / 125 iterations leave 2.21 / 1.00 / 0.50% (scripts/solver_gap.py;
# docs/verdict.md, departure 1). The 16->28 layer stays at 40 (0.71%).
SCA[0.1]["defense.layer_num_iters"] = (100, 40)
SPARSE_STANDARD = {"name": "sparse_standard", "defense": "sparse_standard"}
# The faithful protocol's attacks (`config_lib.faithful_protocol`) and the
# sparse defenses' adaptive ones, without the two replays.
NO_REPLAY = {"attacks": ("end_to_end", "split", "first_layer", "code_decoding",
                         "feature_inversion", "feature_inversion_end_to_end")}
SEEDS = [0, 1, 2]
DATASETS = ["mnist", "fashion_mnist"]

AXES = (
    # 1. The paper's headline comparison, per data set.
    # One group per seed, so each seed's pair lands together: the first SCA
    # cell follows the first No-Defense cell instead of waiting for all three.
    [{"dataset": [d], "target": [NO_DEFENSE, SCA[0.5]], "seed": [s]}
     for d in DATASETS for s in SEEDS]
    # 2. Lambda and the single-sparse-layer target.
    + [{"dataset": [d], "target": [dict(t, **NO_REPLAY) for t in
                                   (SCA[0.25], SCA[0.1], SPARSE_STANDARD)],
        "seed": SEEDS} for d in DATASETS])
