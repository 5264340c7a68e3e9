"""Defend your own Flax NNX CNN with a sparse coding first layer, then attack it.

A user-written CNN on Fashion-MNIST whose first layer is `sca_jax.SparseCoding`
(one import, one line), trained with optax (dictionary by backprop plus the
Hebbian rule), then attacked end to end (last hidden layer) and at the split
(the first block's output) by `sca_jax.attack_model`. docs/own_model.md.

  python examples/defend_your_cnn.py          # ~5,000 images, a few minutes
  python examples/defend_your_cnn.py --tiny   # seconds: the test runs this
"""

import argparse
import tempfile

import jax
import numpy as np
import optax
from flax import nnx

from sca_jax import SparseCoding, attack_model, config_lib, data, hebbian_step


class DefendedCNN(nnx.Module):
  """Sparse coding -> BN -> conv -> BN -> dense -> logits."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.sparse = SparseCoding(1, 16, kernel=5, lam=0.5, stride=2, rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, rngs=rngs)
    self.conv = nnx.Conv(16, 32, (5, 5), strides=2, rngs=rngs)
    self.bn2 = nnx.BatchNorm(32, rngs=rngs)
    self.fc = nnx.Linear(7 * 7 * 32, 256, rngs=rngs)
    self.head = nnx.Linear(256, num_classes, rngs=rngs)

  def first_block(self, x):  # what crosses the split of a split deployment
    return self.bn1(self.sparse(x))

  def features(self, x):     # the last hidden layer: the end-to-end leak
    h = self.bn2(jax.nn.relu(self.conv(self.first_block(x))))
    return jax.nn.relu(self.fc(h.reshape(len(h), -1)))

  def __call__(self, x):
    return self.head(self.features(x))


@nnx.jit
def train_step(model, optimizer, x, y):
  def loss_fn(model):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  hebbian_step(model, x)  # optional: SCA's Hebbian dictionary rule
  return loss


def main(tiny: bool, dataset: str = "fashion_mnist") -> dict:
  cfg = config_lib.make_config("sca", dataset).data
  cfg.max_train, cfg.max_test, cfg.max_aux = ((256, 128, 256) if tiny
                                              else (5000, 1000, 5000))
  splits = data.make_splits(cfg, seed=0)
  model = DefendedCNN(splits.num_classes, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  rng, batch = np.random.default_rng(0), 32
  for epoch in range(1 if tiny else 3):
    order = rng.permutation(len(splits.train_x))
    for i in range(0, len(order) - batch + 1, batch):
      idx = order[i:i + batch]
      loss = train_step(model, optimizer, splits.train_x[idx],
                        splits.train_y[idx])
    print(f"epoch {epoch + 1}: loss {float(loss):.3f}")
  model.eval()
  accuracy = np.mean(np.asarray(model(splits.test_x)).argmax(-1)
                     == splits.test_y)
  print(f"test accuracy {accuracy:.3f}")
  quick = {"epochs": 1, "num_images": 64} if tiny else {}
  results = attack_model(
      model, splits, workdir=tempfile.mkdtemp(prefix="defend_your_cnn_"),
      leaks={"end_to_end": lambda m, x: m.features(x),
             "split": lambda m, x: m.first_block(x)},
      settings={"end_to_end": quick, "split": quick,
                "eval_classifier": {"epochs": 1} if tiny else {}})
  for name, r in results.items():
    f = r["floor"]
    print(f"{name}: PSNR {r['psnr']['mean']:.2f} dB (floor "
          f"{f['psnr']['mean']:.2f}), SSIM {r['ssim']['mean']:.3f} (floor "
          f"{f['ssim']['mean']:.3f}), attack accuracy "
          f"{r['attack_accuracy']['mean']:.3f} (floor "
          f"{f['attack_accuracy']['mean']:.3f})")
  return {"test_accuracy": float(accuracy), "attacks": results}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny data, 1 epoch")
  parser.add_argument("--dataset", default="fashion_mnist",
                      help="any 28x28 grey data set, e.g. mnist")
  args = parser.parse_args()
  main(args.tiny, args.dataset)
