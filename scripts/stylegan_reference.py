r"""Reference numbers from the OFFICIAL StyleGAN2-ADA generator, for a test.

Run once where torch and NVlabs/stylegan2-ada-pytorch are available (no GPU
needed; the official ops fall back to their reference code on CPU):

  python scripts/stylegan_reference.py \
      --official /path/to/stylegan2-ada-pytorch \
      --out tests/data/stylegan2_official_reference.json --commit SHA \
      [--pickle tiny.pkl]

It builds a tiny official `Generator` (`TINY` below), overwrites every
parameter and buffer with `reference_state_dict` (NumPy draws from a fixed
seed, so the weights can be recreated without torch or the official code),
runs it on fixed latents and writes a few output numbers (no weights).
`tests/test_stylegan2_reference.py` rebuilds the same weights in the Flax
port through the converter's state-dict path and compares. `--pickle` also
writes the network as an NVlabs-style snapshot `{'G_ema': G}` to convert
with `scripts/convert_stylegan.py`.

Only NumPy is imported at module level, so the test can load
`reference_state_dict` from here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SEED = 2026
TINY = dict(z_dim=16, c_dim=10, w_dim=16, img_resolution=16, img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=128, channel_max=16,
                                  conv_clamp=256, num_fp16_res=0))
CALL = dict(truncation_psi=0.7, truncation_cutoff=2, noise_mode="const")


def reference_state_dict(official_shapes: Mapping[str, tuple[int, ...]],
                         seed: int = SEED) -> dict[str, np.ndarray]:
  """Every entry N(0, 1) from one NumPy generator, in sorted key order."""
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=official_shapes[k]).astype(np.float32)
          for k in sorted(official_shapes)}


def reference_inputs(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed + 1)
  z = rng.normal(size=(2, TINY["z_dim"])).astype(np.float32)
  c = np.eye(TINY["c_dim"], dtype=np.float32)[[3, 8]]
  return z, c


def summarise(img_NHWC: np.ndarray, ws: np.ndarray) -> dict[str, object]:
  """The committed numbers: statistics and a strided subsample."""
  img = np.asarray(img_NHWC, np.float64)
  return dict(image_shape=list(img.shape), image_mean=img.mean(),
              image_std=img.std(), image_abs_max=np.abs(img).max(),
              image_subsample=img[:, ::5, ::5, :].round(6).tolist(),
              ws_subsample=np.asarray(ws, np.float64)[:, :, :4].round(6)
              .tolist())


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--official", type=Path, required=True,
                 help="checkout of NVlabs/stylegan2-ada-pytorch")
  p.add_argument("--out", type=Path, required=True)
  p.add_argument("--pickle", type=Path, default=None)
  p.add_argument("--commit", default=None,
                 help="the official checkout's commit, to record")
  args = p.parse_args()
  sys.path.insert(0, str(args.official))
  import torch  # pylint: disable=g-import-not-at-top
  from training import networks  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  gen = networks.Generator(**TINY).eval().requires_grad_(False)
  shapes = {k: tuple(v.shape) for k, v in gen.state_dict().items()}
  values = reference_state_dict(shapes)
  gen.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
  z, c = reference_inputs()
  with torch.no_grad():
    ws = gen.mapping(torch.from_numpy(z), torch.from_numpy(c),
                     truncation_psi=CALL["truncation_psi"],
                     truncation_cutoff=CALL["truncation_cutoff"])
    img = gen.synthesis(ws, noise_mode=CALL["noise_mode"], force_fp32=True)
  out = dict(seed=SEED, generator_kwargs=TINY, call=CALL,
             official_commit=args.commit,
             torch=torch.__version__,
             **summarise(img.permute(0, 2, 3, 1).numpy(), ws.numpy()))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(out, indent=1) + "\n")
  print(f"wrote {args.out}")
  if args.pickle:
    import pickle  # pylint: disable=g-import-not-at-top
    with open(args.pickle, "wb") as f:
      pickle.dump(dict(G_ema=gen), f)
    print(f"wrote {args.pickle}")


if __name__ == "__main__":
  main()
