"""Converts official StyleGAN2-ADA weights to the Flax port, without torch.

  python scripts/convert_stylegan.py ffhq.pkl converted/ffhq [--network G_ema]
  python scripts/convert_stylegan.py G_ema.pth converted/g --config kwargs.json

Reads the `.pkl` with a restricted unpickler (no code in it is run), or a
`.pth` zip state dict given the Generator kwargs as a JSON file or string.
Writes an orbax checkpoint plus config.json; load it with
`sca_jax.convert.stylegan.load_generator`.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from sca_jax.convert import stylegan


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("input", type=Path, help="official .pkl or .pth")
  parser.add_argument("output", type=Path, help="directory to write")
  parser.add_argument("--network", default="G_ema",
                      help="pickle entry to convert (G_ema or G)")
  parser.add_argument("--config", default=None,
                      help="Generator kwargs: a JSON file or JSON text "
                           "(required for a .pth state dict)")
  args = parser.parse_args()
  if not args.input.is_file():
    parser.error(f"input {args.input}: no such file")
  config = None
  if args.config is not None:
    text = (Path(args.config).read_text() if Path(args.config).is_file()
            else args.config)
    try:
      config = json.loads(text)
    except json.JSONDecodeError as e:
      parser.error(f"--config: neither a file nor JSON text ({e})")
  try:
    gen = stylegan.convert(args.input, args.output, network=args.network,
                           config=config)
  except pickle.UnpicklingError as e:  # refused (unsafe) or corrupt
    parser.error(str(e))
  print(f"wrote {args.output}: {gen.img_resolution}x{gen.img_resolution} "
        f"generator, z_dim {gen.z_dim}, c_dim {gen.c_dim}, "
        f"num_ws {gen.num_ws}")


if __name__ == "__main__":
  main()
