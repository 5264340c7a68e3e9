"""Converts pytorch-fid's FID Inception weights to the Flax port, without torch.

  python scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth \
      converted/fid_inception

The weights are pytorch-fid's release asset
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
(download it yourself). The file is read with a restricted unpickler (no
code in it is run). Writes an orbax checkpoint plus config.json; load it
with `sca_jax.convert.inception.load_feature_network`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sca_jax.convert import inception


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("input", type=Path, help="pytorch-fid .pth state dict")
  parser.add_argument("output", type=Path, help="directory to write")
  args = parser.parse_args()
  inception.convert(args.input, args.output)
  name = inception.feature_network_name(args.output)
  print(f"wrote {args.output}: {name}")
  if "unofficial" in name:
    print(f"warning: {args.input.name} is not {inception.OFFICIAL_FILE} "
          "(sha256 prefix differs); its FIDs are not comparable to "
          "published ones")


if __name__ == "__main__":
  main()
