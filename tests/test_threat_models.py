"""Each threat model's default leak is the intended tensor of every target."""

import jax
import numpy as np
import pytest

from sca_jax import attacks
from sca_jax import config_lib
from sca_jax.defenses import DEFENSES
from sca_jax.models import build_model


def test_default_head_is_the_authors_mnist_head():
  c = config_lib.get_config(None, name="sca", dataset="mnist")
  assert tuple(c.defense.hidden) == (500, 500, 28, 500)
  assert tuple(config_lib.get_config("paper", name="sca", dataset="mnist")
               .defense.hidden) == (500, 500, 28, 500)
  assert c.attacks[:3] == ("end_to_end", "split", "first_layer")


# One defense per distinct target model (several defenses share a model).
_ONE_PER_MODEL = sorted({DEFENSES.get(n).model: n
                         for n in DEFENSES.names()}.values())


@pytest.mark.parametrize("name", _ONE_PER_MODEL)
def test_default_leaks_resolve_to_the_intended_tensors(name):
  c = config_lib.get_config(None, name=name, dataset="mnist")
  c.defense.num_iters = 3  # shapes only
  model = build_model(c.defense, (28, 28, 1), 10, jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  _, reps = model(x, train=False)
  leaks = {a: attacks.attack_config(a).leak
           for a in ("split", "end_to_end", "first_layer")}
  for leak in leaks.values():
    assert leak in model.representation_names()

  # split: the first linear layer after the feature layers (post-ReLU).
  split = reps[leaks["split"]]
  assert split.shape == (2, 500)
  np.testing.assert_array_equal(split, reps["hidden0"])
  if not model.spec.after_hidden:  # noise is added after the ReLU
    assert float(split.min()) >= 0
  # end_to_end: the last hidden layer (a bottleneck's code if there is one).
  e2e = reps[leaks["end_to_end"]]
  bottleneck = [s for s in model.spec.before_head
                if s.startswith("bottleneck:")]
  last = "bottleneck" if bottleneck else "hidden3"
  np.testing.assert_array_equal(e2e, reps[last])
  width = int(bottleneck[0].partition(":")[2]) if bottleneck else 500
  assert e2e.shape == (2, width)
  assert reps["hidden2"].shape == (2, 28)
  # first_layer: the first feature layer's output (the noised one for a
  # defense that noises it), a spatial map at stride 2.
  first = reps[leaks["first_layer"]]
  np.testing.assert_array_equal(first,
                                reps[model.names[model.spec.first_index]])
  assert first.shape[:3] == (2, 14, 14) and first.ndim == 4
