"""Experiment configs: shared defaults, protocols, and `key=value` arguments.

`base_config()` is the CPU-sized MNIST setting. A protocol is a registered
function that edits a config in place (`@register_protocol("name")`):
"default" changes nothing, "paper" switches to the paper's protocol (full
data, 25 epochs, 500 LCA iterations with tau 100, SGD with momentum; the
paper's Sec. 4 and Appendix B, and the settings of the authors' training
scripts). `make_config(defense, dataset, protocol)` puts them together;
`parse_args("defense=sca,dataset=fashion_mnist,protocol=paper")` reads the
big_vision-style argument of `configs/experiment.py`.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from sca_jax import attacks
from sca_jax.data import SOURCES
from sca_jax.defenses import DEFENSES
from sca_jax.registry import Registry, import_plugins

Protocol = Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]
PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register_protocol(name: str) -> Callable[[Protocol], Protocol]:
  """Registers `fn(config) -> config` as `protocol=<name>`."""
  return PROTOCOLS.register(name)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Modules imported before any registry lookup: defenses, layer kinds and
  # attacks defined outside sca_jax register themselves there.
  c.imports = ()

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.train_fraction = 0.7   # paper: 70% target train / 30% held out
  c.data.max_train = 10_000     # 0 = all
  c.data.max_test = 5_000
  c.data.max_aux = 10_000

  c.defense = ml_collections.ConfigDict()
  c.defense.name = "sca"
  c.defense.model = ml_collections.config_dict.placeholder(str)  # default: name
  c.defense.features = (16, 28)  # per sparse (or conv) layer
  c.defense.kernel = 5
  c.defense.strides = (2, 2)
  # The authors' MNIST-type head: linear layers 500, 500, 28, 500 (ReLU
  # between) after the feature layers, then the classifier.
  c.defense.hidden = (500, 500, 28, 500)
  c.defense.lam = 0.5
  # FISTA on the LCA objective: the same sparse codes as the LCA dynamics in
  # far fewer iterations (README: gap to the optimum per layer). The paper's
  # plain LCA dynamics: solver="lca", tau=10, num_iters=30 on this setting.
  c.defense.solver = "fista"
  c.defense.tau = 10.0  # used by solver="lca" only
  c.defense.num_iters = 15
  c.defense.threshold = "soft_nonneg"
  c.defense.normalize_input = True
  c.defense.remat = False
  c.defense.hebbian = True               # SCA's fast update, layers 2..n
  c.defense.hebbian_lr = 0.01
  c.defense.backprop_dictionaries = True  # paper footnote 3

  c.train = ml_collections.ConfigDict()
  c.train.skip = False   # True: evaluate/attack the latest checkpoint only
  c.train.optimizer = "adam"
  c.train.learning_rate = 3e-3
  c.train.momentum = 0.9
  c.train.weight_decay = 0.0
  c.train.schedule = "cosine"
  c.train.epochs = 3
  c.train.batch_size = 64
  c.train.eval_batch_size = 500
  c.train.checkpoint_every = 100
  c.train.log_every = 20
  c.train.keep = 2
  c.train.num_devices = ml_collections.config_dict.placeholder(int)  # all

  # Both inversion attacks after training (get_config adds the defense's
  # adaptive attacks); MLP inversion nets on CPU (the
  # transposed-conv net is ~17x slower here and no better end to end).
  attack_defaults = attacks.default_config()
  # The paper's two threat models and the stricter first-layer leak
  # (docs/threat_models.md).
  c.attacks = ("end_to_end", "split", "first_layer")
  c.attack = attack_defaults.attack
  for name in c.attack:  # incl. the *_averaged variants adaptive runs add
    if "net" in c.attack[name]:  # the learned inversions
      c.attack[name].net = "mlp"
  c.eval_classifier = attack_defaults.eval_classifier
  return c


@register_protocol("default")
def default_protocol(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The CPU-sized setting of `base_config` as it is."""
  return c


@register_protocol("paper")
def paper_protocol(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The paper's MNIST-type protocol (Sec. 4, Appendix B; the authors'
  training scripts)."""
  c.data.max_train = c.data.max_test = c.data.max_aux = 0
  c.defense.strides = (1, 1)
  c.defense.tau = 100.0
  c.defense.num_iters = 500
  c.defense.solver = "lca"
  c.defense.remat = True  # 500 unrolled steps do not fit in memory otherwise
  c.train.optimizer = "sgd"
  c.train.schedule = "constant"
  c.train.learning_rate = 1e-3
  c.train.momentum = 0.9
  c.train.weight_decay = 1e-3
  c.train.epochs = 25
  c.train.batch_size = 32
  c.train.checkpoint_every = 1000
  c.train.log_every = 100
  paper_attacks = attacks.default_config(paper=True)
  c.attack = paper_attacks.attack  # transposed-conv nets, 50 epochs, batch 16
  return c


def make_config(defense: str = "sca", dataset: str = "mnist",
                protocol: str = "default", imports: tuple[str, ...] = ()
                ) -> ml_collections.ConfigDict:
  """The config of one (defense, data set, protocol).

  The defense's own settings (`Defense.defaults`) go into `config.defense`,
  and `config.attacks` lists the standard attacks followed by the adaptive
  attacks that apply to that defense (`Defense.adaptive_attacks`). `imports`
  are imported first (`config.imports`), so they may name a defense.
  """
  import_plugins(imports)
  spec = DEFENSES.get(defense, field="defense.name")
  SOURCES.get(dataset, field="data.name")
  apply_protocol = PROTOCOLS.get(protocol, field="protocol")
  c = base_config()
  c.imports = tuple(imports)
  c.data.name = dataset
  c.defense.name = defense
  c.defense.model = spec.model
  apply_protocol(c)
  for field, value in (spec.defaults(protocol == "paper")
                       if spec.defaults else {}).items():
    c.defense[field] = value
  c.attacks = tuple(c.attacks) + spec.adaptive_attacks
  return c


ARG_KEYS = ("defense", "dataset", "protocol", "imports")


def parse_args(arg: str | None) -> dict[str, str | tuple[str, ...]]:
  """`"defense=sca,dataset=mnist,protocol=paper"` -> keyword arguments of
  `make_config` (`imports=a.b+c.d`: several modules); a clear error for an
  unknown key or a malformed pair (values are checked by `make_config`)."""
  kw: dict[str, str | tuple[str, ...]] = {}
  for pair in filter(None, (arg or "").split(",")):
    key, sep, value = pair.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not value:
      raise ValueError(f"config argument {pair!r} is not key=value; keys: "
                       f"{ARG_KEYS}")
    if key not in ARG_KEYS:
      raise ValueError(f"unknown config argument {key!r}; allowed: {ARG_KEYS}")
    if key in kw:
      raise ValueError(f"config argument {key!r} given twice")
    kw[key] = tuple(value.split("+")) if key == "imports" else value
  return kw


def get_config(arg: str | None, name: str,
               dataset: str) -> ml_collections.ConfigDict:
  """`configs/<dataset>_<name>.py`: the protocol ("paper") or none."""
  if arg not in (None, "", "paper"):
    raise ValueError(f"unknown config argument {arg!r}; allowed: 'paper' "
                     "or none (the CPU-sized default)")
  return make_config(name, dataset, arg or "default")
