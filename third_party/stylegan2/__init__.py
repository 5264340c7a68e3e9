# Copyright (c) 2021, NVIDIA CORPORATION. All rights reserved.
# JAX port for sca_jax; licensed under the NVIDIA Source Code License for
# StyleGAN2-ADA (see LICENSE.txt in this directory): non-commercial use only.
"""StyleGAN2-ADA generator ported to Flax NNX (see PROVENANCE.md).

Only the Plug-&-Play attack (and `sca_jax.convert`) may import this package;
its license restricts use to non-commercial research and evaluation.
"""

from .networks import (Buffer, FullyConnectedLayer, Generator, MappingNetwork,
                       SynthesisBlock, SynthesisLayer, SynthesisNetwork,
                       ToRGBLayer)

__all__ = ["Buffer", "FullyConnectedLayer", "Generator", "MappingNetwork",
           "SynthesisBlock", "SynthesisLayer", "SynthesisNetwork",
           "ToRGBLayer"]
