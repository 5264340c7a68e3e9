"""Training a small StyleGAN2 on the attacker's auxiliary split (Plug-&-Play).

`trainer.train` runs the loop (checkpoints, resume, divergence stop, progress);
`discriminator`, `augment`, `losses` and `quality` are its parts; `run` ties
it to the data, the evaluation classifier and the output folder for
`scripts/train_generator.py`. The generator itself is the Flax port in
`third_party/stylegan2`.
"""
