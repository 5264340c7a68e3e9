"""A toy attack living outside sca_jax, registered by import alone
(`config.imports = ("toy_nearest_attack",)`): each target image is
reconstructed as the auxiliary image whose leak is nearest (L2), scored with
the shared contract. Used by tests/test_plugins.py and docs/extending.md.
"""

import numpy as np

from sca_jax.attacks import contract


def run(cfg, model, splits, evaluator, workdir, key):
  represent = contract.make_represent(model, cfg.leak)
  bs = int(cfg.represent_batch_size)
  aux = contract.query(represent, splits.aux_x, bs, key)
  n = min(int(cfg.num_images), len(splits.train_x))
  x_true, y_true = splits.train_x[:n], splits.train_y[:n]
  leaked = contract.query(represent, x_true, bs, key)
  aux_flat, leaked_flat = aux.reshape(len(aux), -1), leaked.reshape(n, -1)
  d2 = ((leaked_flat ** 2).sum(1)[:, None] + (aux_flat ** 2).sum(1)[None]
        - 2 * leaked_flat @ aux_flat.T)
  recon = splits.aux_x[np.argmin(d2, axis=1)]
  scores = contract.evaluate_reconstructions(
      "toy_nearest", cfg, recon, x_true, y_true, splits.aux_x, evaluator,
      workdir, aux_y=splits.aux_y)
  return dict(scores, attack="toy_nearest", leak_mean=float(leaked.mean()),
              representations=model.representation_names())


contract.ATTACKS.register("toy_nearest")(contract.AttackSpec(
    "toy_nearest", "toy: nearest auxiliary image in leak space",
    {**contract.LEAK_DEFAULTS, "leak": "first", "num_images": 32}, run))
